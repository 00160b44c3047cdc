//! Run reports (`POST /nx-open-cache/v1/runs`): their format, checked field by field, and what
//! the dashboard keeps of them: per task (project:target) counts and time saved, the last runs,
//! and which task a hash belongs to. Every map is bounded. Nothing here decides access.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{HashMap, VecDeque};

/// Largest run report body accepted (413 above).
pub const MAX_REPORT_BYTES: usize = 1024 * 1024;
/// Most tasks in one report (400 above).
pub const MAX_REPORT_TASKS: usize = 5000;
/// Distinct tasks kept (the least recently reported one goes first).
pub const MAX_TASKS: usize = 2000;
/// Recent runs kept.
pub const MAX_RUNS: usize = 50;
/// Run ids remembered to take a report sent twice once.
const MAX_SEEN_RUN_IDS: usize = 500;
/// hash -> task id entries kept (to name artifacts).
pub const MAX_HASH_TASKS: usize = 5_000;
/// Longest display string kept from a report (command, Nx version, times): longer ones are cut.
pub const MAX_TEXT: usize = 512;
/// Longest id (run id, task id) accepted, in bytes (400 above).
pub const MAX_ID_BYTES: usize = 200;
/// Largest savedMs counted for one task (one week): a larger one is counted as this.
pub const MAX_SAVED_MS: u64 = 7 * 24 * 3600 * 1000;

/// The outcomes of a task, as the history and the run report name them.
pub const OUTCOMES: &[&str] = &[
    "remote-hit",
    "local-hit",
    "stored",
    "not-stored",
    "refused",
    "failed",
    "not-run",
];

/// One task of a checked report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportTask {
    pub id: String,
    pub hash: String,
    pub outcome: &'static str,
    pub duration_ms: u64,
    pub saved_ms: u64,
    pub bytes: u64,
}

/// A checked run report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub run_id: String,
    pub started_at: Option<String>,
    pub ended_at: Option<String>,
    pub nx_version: Option<String>,
    pub command: Option<String>,
    pub tasks: Vec<ReportTask>,
}

/// An id (`runId`, `tasks[i].id`): 1 to [`MAX_ID_BYTES`] bytes of printable text, else refused.
fn ident(v: &Value, field: &str) -> Result<String, String> {
    match v {
        Value::String(s)
            if !s.is_empty() && s.len() <= MAX_ID_BYTES && !s.chars().any(char::is_control) =>
        {
            Ok(s.clone())
        }
        Value::String(_) => Err(format!(
            "{field}: expected 1 to {MAX_ID_BYTES} bytes of printable text"
        )),
        other => Err(format!(
            "{field}: expected a string, got {}",
            crate::value::describe_json(other)
        )),
    }
}

/// An optional display string (`command`, `nxVersion`, `startedAt`, `endedAt`): control
/// characters become spaces and it is cut to [`MAX_TEXT`] characters, never refused for its length.
fn display(v: &Value, field: &str) -> Result<Option<String>, String> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) if s.is_empty() => Ok(None),
        Value::String(s) => Ok(Some(
            s.chars()
                .take(MAX_TEXT)
                .map(|c| if c.is_control() { ' ' } else { c })
                .collect(),
        )),
        other => Err(format!(
            "{field}: expected a string, got {}",
            crate::value::describe_json(other)
        )),
    }
}

/// An optional number of 0 to 1e15 (absent: 0).
fn millis(v: &Value, field: &str) -> Result<u64, String> {
    match v {
        Value::Null => Ok(0),
        Value::Number(n) => match n.as_f64() {
            Some(f) if f.is_finite() && (0.0..=1e15).contains(&f) => Ok(f.round() as u64),
            _ => Err(format!(
                "{field}: expected a number from 0 to 1e15, got {n}"
            )),
        },
        other => Err(format!(
            "{field}: expected a number, got {}",
            crate::value::describe_json(other)
        )),
    }
}

/// Checks a report body; the error names the field (`tasks[3].outcome: ...`).
pub fn parse(body: &[u8]) -> Result<Report, String> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| format!("the body is not valid JSON: {e}"))?;
    let Value::Object(o) = &v else {
        return Err(format!(
            "the body must be a JSON object, got {}",
            crate::value::describe_json(&v)
        ));
    };
    let get = |k: &str| o.get(k).unwrap_or(&Value::Null);
    if get("format") != "nx-open-cache-run-report" {
        return Err("format: expected \"nx-open-cache-run-report\"".to_owned());
    }
    if get("version").as_u64() != Some(1) {
        return Err("version: expected 1".to_owned());
    }
    let run_id = ident(get("runId"), "runId")?;
    let started_at = display(get("startedAt"), "startedAt")?;
    let ended_at = display(get("endedAt"), "endedAt")?;
    let nx_version = display(get("nxVersion"), "nxVersion")?;
    let command = display(get("command"), "command")?;
    let Value::Array(items) = get("tasks") else {
        return Err("tasks: expected an array".to_owned());
    };
    if items.len() > MAX_REPORT_TASKS {
        return Err(format!(
            "tasks: {} tasks, at most {MAX_REPORT_TASKS} are accepted",
            items.len()
        ));
    }
    let mut tasks = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let at = format!("tasks[{i}]");
        let Value::Object(t) = item else {
            return Err(format!("{at}: expected an object"));
        };
        let get = |k: &str| t.get(k).unwrap_or(&Value::Null);
        let id = ident(get("id"), &format!("{at}.id"))?;
        let hash = match get("hash") {
            Value::String(h) if crate::key::TaskHash::parse(h).is_ok() => h.clone(),
            _ => {
                return Err(format!(
                    "{at}.hash: expected a task hash ([A-Za-z0-9_-], 1 to 128 characters)"
                ))
            }
        };
        let outcome = match get("outcome") {
            Value::String(s) => OUTCOMES.iter().find(|o| **o == s.as_str()).copied(),
            _ => None,
        }
        .ok_or_else(|| format!("{at}.outcome: expected one of {}", OUTCOMES.join(", ")))?;
        tasks.push(ReportTask {
            id,
            hash,
            outcome,
            // Optional: Nx gives a skipped or stopped task no times.
            duration_ms: millis(get("durationMs"), &format!("{at}.durationMs"))?,
            saved_ms: millis(get("savedMs"), &format!("{at}.savedMs"))?.min(MAX_SAVED_MS),
            bytes: millis(get("bytes"), &format!("{at}.bytes"))?,
        });
    }
    Ok(Report {
        run_id,
        started_at,
        ended_at,
        nx_version,
        command,
        tasks,
    })
}

/// What is kept per task id.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskStats {
    pub runs: u64,
    pub remote_hits: u64,
    pub local_hits: u64,
    pub stored: u64,
    pub not_stored: u64,
    pub refused: u64,
    pub failed: u64,
    pub not_run: u64,
    pub saved_ms: u64,
    /// Sum of the durations of the runs that executed it (misses).
    pub run_ms: u64,
    pub bytes: u64,
    /// When it was last reported (ms since the epoch).
    pub last_ms: u64,
}

impl TaskStats {
    pub fn hits(&self) -> u64 {
        self.remote_hits.saturating_add(self.local_hits)
    }
    /// Cacheable executions: it ran, whether stored or not.
    pub fn misses(&self) -> u64 {
        self.stored
            .saturating_add(self.not_stored)
            .saturating_add(self.refused)
    }
}

/// One recent run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunRow {
    pub run_id: String,
    /// The name of the token that sent it.
    pub token: String,
    pub received_ms: u64,
    pub started_at: Option<String>,
    pub ended_at: Option<String>,
    pub nx_version: Option<String>,
    pub command: Option<String>,
    pub tasks: u64,
    pub hits: u64,
    pub misses: u64,
    pub failed: u64,
    pub saved_ms: u64,
}

/// Everything kept from run reports; every map bounded.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Runs {
    pub reports: u64,
    pub saved_ms: u64,
    pub tasks: HashMap<String, TaskStats>,
    pub recent: VecDeque<RunRow>,
    pub seen: VecDeque<String>,
    /// hash -> task id, oldest first.
    pub hash_tasks: VecDeque<(String, String)>,
    #[serde(skip)]
    hash_index: HashMap<String, String>,
}

/// `s` cut to [`MAX_TEXT`] characters (strings from a snapshot).
fn cut(s: &mut String) {
    if let Some((at, _)) = s.char_indices().nth(MAX_TEXT) {
        s.truncate(at);
    }
}

impl Runs {
    /// Adds a checked report sent by the token `token` at `now_ms`. Returns false (nothing
    /// counted) for a run id already received.
    pub fn add(&mut self, report: &Report, token: &str, now_ms: u64) -> bool {
        // Keyed by (token, run id): a run id has no control characters, so the last \u{1f}
        // separates them and one token cannot take another's run id.
        let seen = format!("{token}\u{1f}{}", report.run_id);
        if self.seen.iter().any(|r| *r == seen) {
            return false;
        }
        self.seen.push_back(seen);
        while self.seen.len() > MAX_SEEN_RUN_IDS {
            self.seen.pop_front();
        }
        let mut row = RunRow {
            run_id: report.run_id.clone(),
            token: token.to_owned(),
            received_ms: now_ms,
            started_at: report.started_at.clone(),
            ended_at: report.ended_at.clone(),
            nx_version: report.nx_version.clone(),
            command: report.command.clone(),
            tasks: report.tasks.len() as u64,
            hits: 0,
            misses: 0,
            failed: 0,
            saved_ms: 0,
        };
        for t in &report.tasks {
            let s = self.tasks.entry(t.id.clone()).or_default();
            s.runs = s.runs.saturating_add(1);
            s.last_ms = now_ms;
            s.bytes = s.bytes.saturating_add(t.bytes);
            match t.outcome {
                "remote-hit" => s.remote_hits = s.remote_hits.saturating_add(1),
                "local-hit" => s.local_hits = s.local_hits.saturating_add(1),
                "stored" => s.stored = s.stored.saturating_add(1),
                "not-stored" => s.not_stored = s.not_stored.saturating_add(1),
                "refused" => s.refused = s.refused.saturating_add(1),
                "failed" => s.failed = s.failed.saturating_add(1),
                _ => s.not_run = s.not_run.saturating_add(1),
            }
            match t.outcome {
                "remote-hit" | "local-hit" => {
                    row.hits += 1;
                    s.saved_ms = s.saved_ms.saturating_add(t.saved_ms);
                    row.saved_ms = row.saved_ms.saturating_add(t.saved_ms);
                }
                "stored" | "not-stored" | "refused" => {
                    row.misses += 1;
                    s.run_ms = s.run_ms.saturating_add(t.duration_ms);
                }
                "failed" => row.failed += 1,
                _ => {}
            }
            self.name_hash(&t.hash, &t.id);
        }
        self.evict_tasks();
        self.reports = self.reports.saturating_add(1);
        self.saved_ms = self.saved_ms.saturating_add(row.saved_ms);
        self.recent.push_back(row);
        while self.recent.len() > MAX_RUNS {
            self.recent.pop_front();
        }
        true
    }

    fn name_hash(&mut self, hash: &str, task: &str) {
        if self.hash_index.get(hash).is_some_and(|t| t == task) {
            return;
        }
        self.hash_index.insert(hash.to_owned(), task.to_owned());
        self.hash_tasks
            .push_back((hash.to_owned(), task.to_owned()));
        while self.hash_tasks.len() > MAX_HASH_TASKS {
            if let Some((h, t)) = self.hash_tasks.pop_front() {
                if self.hash_index.get(&h) == Some(&t) {
                    self.hash_index.remove(&h);
                }
            }
        }
    }

    /// The task id a run report gave `hash`, if one did.
    pub fn task_of(&self, hash: &str) -> Option<&str> {
        self.hash_index.get(hash).map(String::as_str)
    }

    /// Drops the least recently reported tasks beyond [`MAX_TASKS`].
    fn evict_tasks(&mut self) {
        if self.tasks.len() <= MAX_TASKS {
            return;
        }
        let mut by_age: Vec<(u64, String)> = self
            .tasks
            .iter()
            .map(|(k, v)| (v.last_ms, k.clone()))
            .collect();
        by_age.sort();
        let excess = self.tasks.len() - MAX_TASKS;
        for (_, k) in by_age.into_iter().take(excess) {
            self.tasks.remove(&k);
        }
    }

    /// After loading from a snapshot: bounds enforced again, the hash index rebuilt.
    pub fn restored(mut self) -> Runs {
        self.tasks
            .retain(|k, _| k.len() <= MAX_ID_BYTES && !k.chars().any(char::is_control));
        self.evict_tasks();
        while self.recent.len() > MAX_RUNS {
            self.recent.pop_front();
        }
        for r in &mut self.recent {
            cut(&mut r.run_id);
            cut(&mut r.token);
            for s in [
                &mut r.started_at,
                &mut r.ended_at,
                &mut r.nx_version,
                &mut r.command,
            ]
            .into_iter()
            .flatten()
            {
                cut(s);
            }
        }
        while self.seen.len() > MAX_SEEN_RUN_IDS {
            self.seen.pop_front();
        }
        while self.hash_tasks.len() > MAX_HASH_TASKS {
            self.hash_tasks.pop_front();
        }
        self.hash_tasks
            .retain(|(h, t)| h.len() <= 128 && t.len() <= MAX_ID_BYTES);
        self.hash_index = self.hash_tasks.iter().cloned().collect();
        self
    }
}

/// `project` and `target` of a task id `project:target[:configuration]`.
pub fn split_task(id: &str) -> (&str, &str) {
    let mut parts = id.splitn(3, ':');
    let project = parts.next().unwrap_or("");
    let target = parts.next().unwrap_or("");
    (project, target)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(tasks: &str) -> String {
        format!(
            r#"{{"format":"nx-open-cache-run-report","version":1,"runId":"r1","startedAt":"2026-01-01T00:00:00Z","endedAt":"2026-01-01T00:01:00Z","nxVersion":"24.0.6","command":"run-many -t build","tasks":[{tasks}]}}"#
        )
    }

    #[test]
    fn a_valid_report_is_counted_once_per_run_id() {
        let body = report(
            r#"{"id":"lib-a:build","hash":"123","outcome":"remote-hit","durationMs":40,"savedMs":960,"bytes":2048},
               {"id":"lib-b:build:production","hash":"456","outcome":"stored","durationMs":1200},
               {"id":"lib-c:test","hash":"789","outcome":"failed","durationMs":5}"#,
        );
        let r = parse(body.as_bytes()).expect("valid");
        assert_eq!(r.tasks.len(), 3);
        assert_eq!(r.tasks[1].saved_ms, 0);
        let mut runs = Runs::default();
        assert!(runs.add(&r, "ci", 1000));
        assert!(!runs.add(&r, "ci", 2000), "the same run id twice");
        assert_eq!(runs.reports, 1);
        assert_eq!(runs.saved_ms, 960);
        let a = &runs.tasks["lib-a:build"];
        assert_eq!(
            (a.hits(), a.misses(), a.saved_ms, a.bytes),
            (1, 0, 960, 2048)
        );
        let b = &runs.tasks["lib-b:build:production"];
        assert_eq!((b.hits(), b.misses(), b.run_ms), (0, 1, 1200));
        assert_eq!(runs.task_of("456"), Some("lib-b:build:production"));
        assert_eq!(split_task("lib-b:build:production"), ("lib-b", "build"));
        let row = &runs.recent[0];
        assert_eq!(
            (row.hits, row.misses, row.failed, row.saved_ms),
            (1, 1, 1, 960)
        );
        let json = serde_json::to_string(&runs).expect("serialize");
        let back: Runs = serde_json::from_str::<Runs>(&json)
            .expect("parse")
            .restored();
        assert_eq!(back.task_of("123"), Some("lib-a:build"));
        assert_eq!(back.tasks, runs.tasks);
    }

    #[test]
    fn invalid_reports_name_the_field() {
        let task = |t: &str| report(t);
        for (body, field) in [
            ("[]".to_owned(), "JSON object"),
            ("{".to_owned(), "not valid JSON"),
            (r#"{"format":"x","version":1}"#.to_owned(), "format"),
            (
                r#"{"format":"nx-open-cache-run-report","version":2}"#.to_owned(),
                "version",
            ),
            (
                r#"{"format":"nx-open-cache-run-report","version":1,"tasks":[]}"#.to_owned(),
                "runId",
            ),
            (
                r#"{"format":"nx-open-cache-run-report","version":1,"runId":"r","tasks":{}}"#
                    .to_owned(),
                "tasks: expected an array",
            ),
            (
                task(r#"{"id":"a:b","hash":"1","outcome":"hit","durationMs":1}"#),
                "tasks[0].outcome",
            ),
            (
                task(r#"{"id":"a:b","hash":"../x","outcome":"stored","durationMs":1}"#),
                "tasks[0].hash",
            ),
            (
                task(r#"{"id":"","hash":"1","outcome":"stored","durationMs":1}"#),
                "tasks[0].id",
            ),
            (
                task(r#"{"id":"a:\u0007b","hash":"1","outcome":"stored"}"#),
                "tasks[0].id: expected 1 to 200 bytes",
            ),
            (
                task(&format!(
                    r#"{{"id":"{}","hash":"1","outcome":"stored"}}"#,
                    "é".repeat(101)
                )),
                "tasks[0].id: expected 1 to 200 bytes",
            ),
            (
                task(r#"{"id":"a:b","hash":"1","outcome":"stored","durationMs":-1}"#),
                "tasks[0].durationMs",
            ),
            (
                task(
                    r#"{"id":"a:b","hash":"1","outcome":"stored","durationMs":1},{"id":"a:b","hash":"1","outcome":"stored","durationMs":1,"savedMs":"x"}"#,
                ),
                "tasks[1].savedMs",
            ),
            (task("7"), "tasks[0]: expected an object"),
        ] {
            let e = parse(body.as_bytes()).expect_err(&body);
            assert!(e.contains(field), "{body}: {e}");
        }
        let many = vec![r#"{"id":"a:b","hash":"1","outcome":"stored","durationMs":1}"#; 5001];
        let e = parse(report(&many.join(",")).as_bytes()).expect_err("too many");
        assert!(e.contains("5001 tasks"), "{e}");
    }

    #[test]
    fn optional_fields_and_long_display_strings_are_accepted() {
        // What lib/run-report.js sends for a skipped task: no durationMs.
        let long = "x".repeat(2000);
        let body = format!(
            r#"{{"format":"nx-open-cache-run-report","version":1,"runId":"r2","command":"run-many --projects={long}\u0000","nxVersion":"{long}","tasks":[{{"id":"a:build","hash":"1","outcome":"not-run"}},{{"id":"b:build","hash":"2","outcome":"remote-hit","savedMs":1e15}}]}}"#
        );
        let r = parse(body.as_bytes()).expect("valid");
        assert_eq!(r.tasks[0].duration_ms, 0);
        assert_eq!(r.tasks[1].saved_ms, MAX_SAVED_MS);
        let command = r.command.as_deref().expect("command");
        assert_eq!(command.chars().count(), MAX_TEXT);
        assert!(command.starts_with("run-many --projects=xxx"));
        assert_eq!(r.nx_version.as_deref().map(str::len), Some(MAX_TEXT));
        let mut runs = Runs::default();
        assert!(runs.add(&r, "ci", 1));
        assert_eq!(runs.tasks["a:build"].not_run, 1);
        // The same run id from another token is another run; from the same token, a repeat.
        assert!(runs.add(&r, "dev", 2));
        assert!(!runs.add(&r, "ci", 3));
        assert_eq!(runs.reports, 2);
    }

    #[test]
    fn maps_stay_bounded() {
        let mut runs = Runs::default();
        for r in 0..3u64 {
            let tasks: Vec<ReportTask> = (0..1500)
                .map(|i| ReportTask {
                    id: format!("p{r}-{i}:build"),
                    hash: format!("{r}{i:05}"),
                    outcome: "stored",
                    duration_ms: 1,
                    saved_ms: 0,
                    bytes: 0,
                })
                .collect();
            let rep = Report {
                run_id: format!("run{r}"),
                started_at: None,
                ended_at: None,
                nx_version: None,
                command: None,
                tasks,
            };
            assert!(runs.add(&rep, "ci", 10 + r));
        }
        assert_eq!(runs.tasks.len(), MAX_TASKS);
        // The newest run's tasks are all kept.
        assert!(runs.tasks.contains_key("p2-1499:build"));
        assert!(!runs.tasks.contains_key("p0-0:build"));
    }
}
