//! Every path of an archive, and where its symlinks lead: a node per path found by (parent node,
//! name), so each entry costs one lookup per component and a symlink resolves without building
//! paths.

use super::{Refusal, Rule};
use crate::archive::rules::{self, shown, EntryKind};
use std::collections::HashMap;

/// What is at a path of the archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Node {
    /// A directory only implied by the paths below it (so far).
    Implicit,
    Dir,
    File,
    /// Index into [`Tree::links`].
    Symlink(u32),
    /// `terminalOutput` or `code`.
    Reserved,
}

impl Node {
    pub(super) fn from(kind: EntryKind) -> Node {
        match kind {
            EntryKind::File => Node::File,
            EntryKind::Dir => Node::Dir,
            EntryKind::Symlink => Node::Symlink(0),
        }
    }

    pub(super) fn name(self) -> &'static str {
        match self {
            Node::Implicit | Node::Dir => "a directory",
            Node::File => "a file",
            Node::Symlink(_) => "a symlink",
            Node::Reserved => "a root entry of Nx's layout",
        }
    }
}

const ROOT: u32 = 0;
/// Symlinks followed to resolve one symlink, itself included, before it is refused: the kernel's
/// own limit, counted as the kernel counts (every link followed, nested or one after another).
const MAX_LINK_DEPTH: u32 = rules::MAX_SYMLINK_LEVELS;
/// Path components walked while resolving all symlinks of one archive before it is refused.
const LINK_BUDGET: u64 = 16 << 20;

struct Link {
    node: u32,
    path: Box<[u8]>,
    target: Box<[u8]>,
}

/// Every path of the archive: a node per path, found by (parent node, name).
pub(super) struct Tree {
    nodes: Vec<Node>,
    parents: Vec<u32>,
    children: HashMap<Box<[u8]>, u32>,
    links: Vec<Link>,
    key: Vec<u8>,
    max_nodes: u64,
}

type Why = (Rule, String);

impl Tree {
    pub(super) fn new(max_entries: u64) -> Tree {
        Tree {
            nodes: vec![Node::Dir],
            parents: vec![ROOT],
            children: HashMap::new(),
            links: Vec::new(),
            key: Vec::with_capacity(64),
            max_nodes: max_entries,
        }
    }

    fn child(&mut self, parent: u32, name: &[u8]) -> Option<u32> {
        self.key.clear();
        self.key.extend_from_slice(&parent.to_le_bytes());
        self.key.extend_from_slice(name);
        self.children.get(self.key.as_slice()).copied()
    }

    fn kind(&self, node: u32) -> Node {
        self.nodes.get(node as usize).copied().unwrap_or(Node::Dir)
    }

    fn parent(&self, node: u32) -> u32 {
        self.parents.get(node as usize).copied().unwrap_or(ROOT)
    }

    fn add(&mut self, parent: u32, name: &[u8], kind: Node) -> Result<u32, Why> {
        if self.nodes.len() as u64 > self.max_nodes {
            return Err((
                Rule::Limit,
                format!(
                    "the archive holds more than {} paths (entries and the directories they imply)",
                    self.max_nodes
                ),
            ));
        }
        let id = u32::try_from(self.nodes.len())
            .map_err(|_| (Rule::Limit, "too many paths".to_owned()))?;
        self.nodes.push(kind);
        self.parents.push(parent);
        let mut key = Vec::with_capacity(4 + name.len());
        key.extend_from_slice(&parent.to_le_bytes());
        key.extend_from_slice(name);
        self.children.insert(key.into_boxed_slice(), id);
        Ok(id)
    }

    /// Adds the entry at `comps` (not empty); `raw` and `target` are kept for a symlink.
    pub(super) fn insert(
        &mut self,
        comps: &[&[u8]],
        kind: Node,
        raw: &[u8],
        target: Option<&[u8]>,
    ) -> Result<(), Why> {
        let mut cur = ROOT;
        let last = comps.len().saturating_sub(1);
        for (i, name) in comps.iter().enumerate() {
            let found = self.child(cur, name);
            if i < last {
                cur = match found {
                    Some(id) => {
                        let k = self.kind(id);
                        if matches!(k, Node::Symlink(_) | Node::File | Node::Reserved) {
                            let above = comps.get(..=i).unwrap_or_default().join(&b'/');
                            return Err((
                                Rule::Nesting,
                                format!(
                                    "its parent {} is {} of the archive",
                                    shown(&above),
                                    k.name()
                                ),
                            ));
                        }
                        id
                    }
                    None => self.add(cur, name, Node::Implicit)?,
                };
                continue;
            }
            let node = match kind {
                Node::Symlink(_) => {
                    let index = u32::try_from(self.links.len())
                        .map_err(|_| (Rule::Limit, "too many symlinks".to_owned()))?;
                    Node::Symlink(index)
                }
                other => other,
            };
            let id = match found {
                None => self.add(cur, name, node)?,
                Some(id) => match (self.kind(id), node) {
                    (Node::Implicit, Node::Dir) => {
                        if let Some(slot) = self.nodes.get_mut(id as usize) {
                            *slot = Node::Dir;
                        }
                        id
                    }
                    (Node::Implicit, other) => {
                        return Err((
                            Rule::Nesting,
                            format!(
                                "{} here, but other entries of the archive lie below it",
                                other.name()
                            ),
                        ))
                    }
                    (existing, _) => {
                        return Err((
                            Rule::Duplicate,
                            format!("duplicate entry (already {})", existing.name()),
                        ))
                    }
                },
            };
            if let Node::Symlink(_) = node {
                self.links.push(Link {
                    node: id,
                    path: raw.into(),
                    target: target.unwrap_or_default().into(),
                });
            }
        }
        Ok(())
    }

    /// Resolves every symlink (see rule 8 of the module documentation).
    pub(super) fn check_links(mut self) -> Result<(), Refusal> {
        let links = std::mem::take(&mut self.links);
        let mut r = Resolver {
            tree: &mut self,
            links: &links,
            memo: vec![None; links.len()],
            active: vec![false; links.len()],
            depth: 0,
            budget: LINK_BUDGET,
        };
        for index in 0..links.len() {
            if let Err(why) = r.resolve(index) {
                let link = links.get(index);
                let (path, target) = link
                    .map(|l| (&l.path[..], &l.target[..]))
                    .unwrap_or_default();
                return Err(Refusal::entry(
                    Rule::Symlink,
                    path,
                    format!("symlink to {}: {why}", shown(target)),
                ));
            }
        }
        Ok(())
    }
}

/// A place a symlink resolves to: a node of the archive, and how many components below it the
/// path goes where the archive holds nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pos {
    node: u32,
    beyond: u32,
}

/// Where a symlink resolves to, and how many symlinks (itself included) were followed to get
/// there.
type Resolved = (Pos, u32);

fn too_many_levels() -> String {
    format!("more than {MAX_LINK_DEPTH} levels of symlinks")
}

struct Resolver<'a> {
    tree: &'a mut Tree,
    links: &'a [Link],
    /// Each link's resolution, reused when another link goes through it: its count of links
    /// followed is reused with it, so a chain costs the same whatever the order of its entries.
    memo: Vec<Option<Result<Resolved, String>>>,
    active: Vec<bool>,
    depth: u32,
    budget: u64,
}

impl Resolver<'_> {
    /// Where link `index` points, following the archive's other links.
    fn resolve(&mut self, index: usize) -> Result<Resolved, String> {
        if let Some(Some(done)) = self.memo.get(index) {
            return done.clone();
        }
        if self.active.get(index) == Some(&true) {
            return Err("a symlink loop".into());
        }
        // Nested resolutions each follow at least one link: this bounds the recursion too.
        if self.depth >= MAX_LINK_DEPTH {
            return Err(too_many_levels());
        }
        let Some(link) = self.links.get(index) else {
            return Err("an unknown symlink".into());
        };
        if let Some(a) = self.active.get_mut(index) {
            *a = true;
        }
        self.depth += 1;
        let start = Pos {
            node: self.tree.parent(link.node),
            beyond: 0,
        };
        let result = self.walk(start, &link.target);
        self.depth -= 1;
        if let Some(a) = self.active.get_mut(index) {
            *a = false;
        }
        if let Some(slot) = self.memo.get_mut(index) {
            *slot = Some(result.clone());
        }
        result
    }

    /// Resolves `target` from `pos` for a link: the place, and the links followed (the link
    /// itself, counted first, and every link its target goes through, with the links those go
    /// through).
    fn walk(&mut self, mut pos: Pos, target: &[u8]) -> Result<Resolved, String> {
        let mut followed = 1u32;
        for comp in target.split(|c| *c == b'/') {
            self.budget = self
                .budget
                .checked_sub(1)
                .ok_or("the archive's symlinks are too many or too deep to check")?;
            match comp {
                b"" | b"." => {}
                b".." => {
                    if pos.beyond > 0 || self.tree.kind(pos.node) == Node::File {
                        return Err("`..` out of a path that is not a directory of the archive \
                                    (it may be a symlink where the archive is restored)"
                            .into());
                    }
                    if pos.node == ROOT {
                        return Err("it points outside the archive".into());
                    }
                    pos.node = self.tree.parent(pos.node);
                }
                name => {
                    let (next, links) = self.step(pos, name)?;
                    followed = followed.saturating_add(links);
                    if followed > MAX_LINK_DEPTH {
                        return Err(too_many_levels());
                    }
                    pos = next;
                }
            }
        }
        Ok((pos, followed))
    }

    /// One component from `pos`: the place it leads to, and the links followed on the way.
    fn step(&mut self, pos: Pos, name: &[u8]) -> Result<Resolved, String> {
        if pos.beyond > 0 || self.tree.kind(pos.node) == Node::File {
            let beyond = Pos {
                node: pos.node,
                beyond: pos.beyond + 1,
            };
            return Ok((beyond, 0));
        }
        let Some(id) = self.tree.child(pos.node, name) else {
            let beyond = Pos {
                node: pos.node,
                beyond: 1,
            };
            return Ok((beyond, 0));
        };
        match self.tree.kind(id) {
            Node::Reserved => Err(format!(
                "it points to {} (Nx's layout, not an output)",
                shown(name)
            )),
            Node::Symlink(index) => self.resolve(index as usize),
            _ => Ok((
                Pos {
                    node: id,
                    beyond: 0,
                },
                0,
            )),
        }
    }
}
