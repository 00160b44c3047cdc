//! One gzip member (RFC 1952): the header parsed here, the deflate data inflated by flate2 into
//! the tar check, the CRC-32 and length trailer compared, and nothing accepted after it.

use super::tar::Tar;
use super::{Refusal, Rule};
use flate2::{Crc, Decompress, FlushDecompress, Status};

/// A gzip header this long (name and comment fields included) is refused.
const MAX_GZIP_HEADER: usize = 64 * 1024;
const INFLATE_BUFFER: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GzStage {
    Header,
    Body,
    Trailer,
    Done,
}

/// One gzip member (RFC 1952), inflated with flate2 into the tar check.
pub(super) struct Gunzip {
    stage: GzStage,
    head: Vec<u8>,
    z: Decompress,
    crc: Crc,
    out: Box<[u8]>,
    trailer: [u8; 8],
    trailer_len: usize,
}

fn gzip_refusal(reason: impl Into<String>) -> Refusal {
    Refusal::new(Rule::Gzip, reason)
}

/// Corrupt deflate data, in one reason whatever the decoder said: its own message depends on
/// how the input was cut (zlib-rs may notice bad data in one call, return without an error, and
/// report "repeated call with bad state" on the next call), and a verdict must not.
fn corrupt() -> Refusal {
    gzip_refusal("the compressed data is corrupt (invalid deflate data)")
}

impl Gunzip {
    pub(super) fn new() -> Gunzip {
        Gunzip {
            stage: GzStage::Header,
            head: Vec::new(),
            z: Decompress::new(false),
            crc: Crc::new(),
            out: vec![0u8; INFLATE_BUFFER].into_boxed_slice(),
            trailer: [0u8; 8],
            trailer_len: 0,
        }
    }

    pub(super) fn feed(&mut self, mut data: &[u8], tar: &mut Tar) -> Result<(), Refusal> {
        while !data.is_empty() {
            let used =
                match self.stage {
                    GzStage::Header => self.header(data)?,
                    GzStage::Body => {
                        let (used, ended) = self.inflate(data, tar)?;
                        if ended {
                            self.stage = GzStage::Trailer;
                        } else if used < data.len() {
                            return Err(corrupt());
                        }
                        used
                    }
                    GzStage::Trailer => self.trailer(data)?,
                    GzStage::Done => return Err(Refusal::new(
                        Rule::TrailingData,
                        "bytes follow the end of the gzip stream (Nx reads only its first member)",
                    )),
                };
            data = data.get(used..).unwrap_or_default();
        }
        Ok(())
    }

    /// Takes header bytes; returns how many of `data` it used.
    fn header(&mut self, data: &[u8]) -> Result<usize, Refusal> {
        let before = self.head.len();
        let take = data.len().min(MAX_GZIP_HEADER + 1 - before);
        self.head
            .extend_from_slice(data.get(..take).unwrap_or_default());
        match parse_gzip_header(&self.head)? {
            Some(len) => {
                self.stage = GzStage::Body;
                self.head = Vec::new();
                Ok(len.saturating_sub(before))
            }
            None if self.head.len() > MAX_GZIP_HEADER => Err(gzip_refusal(format!(
                "the gzip header is longer than {MAX_GZIP_HEADER} bytes"
            ))),
            None => Ok(take),
        }
    }

    /// Inflates `data` into the tar check; returns the bytes used and whether the deflate stream
    /// ended.
    fn inflate(&mut self, data: &[u8], tar: &mut Tar) -> Result<(usize, bool), Refusal> {
        let mut used = 0usize;
        loop {
            let input = data.get(used..).unwrap_or_default();
            let (in_before, out_before) = (self.z.total_in(), self.z.total_out());
            let result = self
                .z
                .decompress(input, &mut self.out, FlushDecompress::None);
            let took = (self.z.total_in() - in_before) as usize;
            let made = (self.z.total_out() - out_before) as usize;
            used += took;
            if made > 0 {
                let produced = self.out.get(..made).unwrap_or_default();
                self.crc.update(produced);
                tar.push(produced)?;
            }
            let status = result.map_err(|_| corrupt())?;
            if status == Status::StreamEnd {
                return Ok((used, true));
            }
            if made == self.out.len() {
                continue;
            }
            if used == data.len() {
                return Ok((used, false));
            }
            if took == 0 && made == 0 {
                return Err(corrupt());
            }
        }
    }

    fn trailer(&mut self, data: &[u8]) -> Result<usize, Refusal> {
        let take = data.len().min(8 - self.trailer_len);
        for (slot, b) in self.trailer[self.trailer_len..]
            .iter_mut()
            .zip(data.iter().take(take))
        {
            *slot = *b;
        }
        self.trailer_len += take;
        if self.trailer_len == 8 {
            let t = self.trailer;
            let crc = u32::from_le_bytes([t[0], t[1], t[2], t[3]]);
            let isize = u32::from_le_bytes([t[4], t[5], t[6], t[7]]);
            if crc != self.crc.sum() {
                return Err(gzip_refusal(
                    "the gzip checksum (CRC-32) does not match the data (corrupt)",
                ));
            }
            if isize != self.z.total_out() as u32 {
                return Err(gzip_refusal(
                    "the gzip trailer's length does not match the data (corrupt)",
                ));
            }
            self.stage = GzStage::Done;
        }
        Ok(take)
    }

    /// The verdict on the gzip framing once every byte was fed; `tar` gets what a last call to
    /// the decoder still makes.
    pub(super) fn finish(&mut self, fed: u64, tar: &mut Tar) -> Result<(), Refusal> {
        if self.stage == GzStage::Body {
            // The input ran out inside the deflate data: ask the decoder once more, with nothing,
            // so that data it already found corrupt is refused as corrupt (as it is when more
            // bytes follow) and not as truncated.
            if self.inflate(&[], tar)?.1 {
                self.stage = GzStage::Trailer;
            }
        }
        match self.stage {
            GzStage::Done => Ok(()),
            GzStage::Header if fed == 0 => Err(gzip_refusal("it is empty (0 bytes)")),
            GzStage::Header => Err(gzip_refusal(format!(
                "the gzip header is truncated (the payload is only {fed} byte{})",
                if fed == 1 { "" } else { "s" }
            ))),
            GzStage::Body => Err(gzip_refusal(
                "the gzip stream is truncated (it ends before the end of its compressed data)",
            )),
            GzStage::Trailer => Err(gzip_refusal(
                "the gzip stream is truncated (its 8-byte trailer is incomplete)",
            )),
        }
    }
}

const FHCRC: u8 = 0x02;
const FEXTRA: u8 = 0x04;
const FNAME: u8 = 0x08;
const FCOMMENT: u8 = 0x10;

/// The length of the complete gzip header at the start of `b`, `None` while it is incomplete.
fn parse_gzip_header(b: &[u8]) -> Result<Option<usize>, Refusal> {
    if let (Some(&m0), Some(&m1)) = (b.first(), b.get(1)) {
        if [m0, m1] != crate::archive::GZIP_MAGIC {
            // Objects the plugin signs or encrypts start with "NXOS" (`crate::seal`): whoever
            // reads them without the seal layer (`serve`) says so.
            let sealed = if [m0, m1] == *b"NX" {
                "; \"NX\" starts an object sealed by the plugin (signed or encrypted), which only \
                 the plugin opens"
            } else {
                ""
            };
            return Err(gzip_refusal(format!(
                "not gzip: it starts with {m0:02x} {m1:02x} (a gzip stream starts with 1f 8b){sealed}"
            )));
        }
    }
    let (Some(&method), Some(&flags)) = (b.get(2), b.get(3)) else {
        return Ok(None);
    };
    if method != 8 {
        return Err(gzip_refusal(format!(
            "gzip compression method {method} (only 8, deflate, exists)"
        )));
    }
    if flags & 0xe0 != 0 {
        return Err(gzip_refusal(format!(
            "the gzip header sets reserved flags ({flags:#04x})"
        )));
    }
    let mut pos = 10usize;
    if b.len() < pos {
        return Ok(None);
    }
    if flags & FEXTRA != 0 {
        let (Some(&lo), Some(&hi)) = (b.get(pos), b.get(pos + 1)) else {
            return Ok(None);
        };
        pos += 2 + u16::from_le_bytes([lo, hi]) as usize;
        if b.len() < pos {
            return Ok(None);
        }
    }
    for flag in [FNAME, FCOMMENT] {
        if flags & flag != 0 {
            match b
                .get(pos..)
                .and_then(|rest| rest.iter().position(|c| *c == 0))
            {
                Some(nul) => pos += nul + 1,
                None => return Ok(None),
            }
        }
    }
    if flags & FHCRC != 0 {
        let (Some(&lo), Some(&hi)) = (b.get(pos), b.get(pos + 1)) else {
            return Ok(None);
        };
        let mut crc = Crc::new();
        crc.update(b.get(..pos).unwrap_or_default());
        if u16::from_le_bytes([lo, hi]) != (crc.sum() & 0xffff) as u16 {
            return Err(gzip_refusal("the gzip header's CRC does not match"));
        }
        pos += 2;
    }
    Ok(Some(pos))
}
