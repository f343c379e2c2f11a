//! WebSocket frames (RFC 6455 §5): an incremental decoder and encoders.
//!
//! [`FrameReader`] parses frames straight out of the caller's read buffer. A
//! complete frame is unmasked while being copied into the [`Bytes`] handed to
//! the caller; only an incomplete tail is copied into the reader, and that
//! allocation is released (not merely cleared) as soon as the frame completes,
//! so an idle reader owns no heap memory.
//!
//! The `encode_*` functions append one complete (FIN) frame to a `Vec<u8>`:
//! the plain ones produce unmasked server frames, the `encode_client_*` ones
//! masked client frames (used by the benchmark client and tests).

use bytes::Bytes;
use ring::rand::{SecureRandom, SystemRandom};

/// Which side of the connection a [`FrameReader`] decodes for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// We are the server: every incoming frame must be masked.
    Server,
    /// We are the client: no incoming frame may be masked.
    Client,
}

/// A frame opcode (RFC 6455 §5.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum OpCode {
    /// Continues a fragmented text or binary message.
    Continuation = 0x0,
    /// First (or only) frame of a UTF-8 text message.
    Text = 0x1,
    /// First (or only) frame of a binary message.
    Binary = 0x2,
    /// Connection close.
    Close = 0x8,
    /// Ping.
    Ping = 0x9,
    /// Pong.
    Pong = 0xA,
}

impl OpCode {
    /// The opcode for a 4-bit wire value, `None` if reserved.
    pub const fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            0x0 => Self::Continuation,
            0x1 => Self::Text,
            0x2 => Self::Binary,
            0x8 => Self::Close,
            0x9 => Self::Ping,
            0xA => Self::Pong,
            _ => return None,
        })
    }

    /// Close, Ping and Pong are control frames.
    pub const fn is_control(self) -> bool {
        (self as u8) & 0x8 != 0
    }
}

/// A complete message (or control frame) decoded by [`FrameReader`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// A text message; the bytes are validated UTF-8.
    Text(Bytes),
    /// A binary message.
    Binary(Bytes),
    /// A ping; the payload is at most 125 bytes.
    Ping(Bytes),
    /// A pong; the payload is at most 125 bytes.
    Pong(Bytes),
    /// A close frame with its status code and UTF-8 reason, if any.
    Close(Option<(u16, String)>),
}

/// A protocol violation by the peer. After an error the reader is reset and
/// the connection should be closed with [`FrameError::close_code`].
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// A server received a frame without a mask.
    #[error("client frame is not masked")]
    UnmaskedFrame,
    /// A client received a masked frame.
    #[error("server frame is masked")]
    MaskedFrame,
    /// RSV1..3 set although no extension was negotiated.
    #[error("reserved bits set: {0:#05b}")]
    ReservedBits(u8),
    /// An opcode reserved by RFC 6455.
    #[error("unknown opcode {0:#x}")]
    UnknownOpcode(u8),
    /// A control frame whose payload exceeds 125 bytes.
    #[error("control frame payload longer than 125 bytes")]
    ControlFrameTooLong,
    /// A control frame without FIN.
    #[error("fragmented control frame")]
    FragmentedControlFrame,
    /// A continuation frame while no fragmented message is open.
    #[error("continuation frame without a message to continue")]
    UnexpectedContinuation,
    /// A new text or binary frame while a fragmented message is open.
    #[error("new data frame while a fragmented message is open")]
    ExpectedContinuation,
    /// A frame or reassembled message longer than the configured limit.
    #[error("message larger than {limit} bytes")]
    MessageTooLarge {
        /// The reader's `max_message`.
        limit: usize,
    },
    /// A text message or close reason that is not valid UTF-8.
    #[error("invalid UTF-8 in text message or close reason")]
    InvalidUtf8,
    /// A close status code that may not be sent on the wire.
    #[error("invalid close code {0}")]
    InvalidCloseCode(u16),
    /// A close payload of exactly one byte.
    #[error("close payload of length 1")]
    InvalidClosePayload,
}

impl FrameError {
    /// The close code to send the peer (RFC 6455 §7.4.1): 1007 for invalid
    /// UTF-8, 1009 for an oversized message, 1002 for everything else.
    pub const fn close_code(&self) -> u16 {
        match self {
            Self::InvalidUtf8 => 1007,
            Self::MessageTooLarge { .. } => 1009,
            _ => 1002,
        }
    }
}

/// Longest possible frame header: 2 + 8 (length) + 4 (mask).
const MAX_HEADER: usize = 14;

/// A parsed, validated frame header.
#[derive(Clone, Copy, Debug)]
struct Header {
    fin: bool,
    opcode: OpCode,
    mask: Option<[u8; 4]>,
    header_len: usize,
    payload_len: usize,
}

/// Outcome of looking at the start of a frame.
enum Parsed {
    /// At least this many header bytes are needed.
    Need(usize),
    /// The header is complete and valid.
    Header(Header),
}

/// A frame's payload, still masked.
enum Payload<'a> {
    /// Borrowed from the caller's input.
    Borrowed(&'a [u8]),
    /// The reader's own buffer holding the whole frame; payload starts here.
    Owned(Vec<u8>, usize),
}

impl Payload<'_> {
    fn len(&self) -> usize {
        match self {
            Payload::Borrowed(s) => s.len(),
            Payload::Owned(v, start) => v.len() - start,
        }
    }

    /// The unmasked payload as `Bytes` (one copy when borrowed, none when owned).
    fn into_bytes(self, mask: Option<[u8; 4]>) -> Bytes {
        match self {
            Payload::Borrowed(s) => {
                let mut v = Vec::with_capacity(s.len());
                unmask_extend(&mut v, s, mask);
                Bytes::from(v)
            }
            Payload::Owned(mut v, start) => {
                if let Some(m) = mask {
                    apply_mask(&mut v[start..], m);
                }
                Bytes::from(v).slice(start..)
            }
        }
    }

    /// Appends the unmasked payload to `dst`.
    fn append_to(self, dst: &mut Vec<u8>, mask: Option<[u8; 4]>) {
        match self {
            Payload::Borrowed(s) => unmask_extend(dst, s, mask),
            Payload::Owned(v, start) => unmask_extend(dst, &v[start..], mask),
        }
    }
}

/// Incremental frame decoder for one connection.
///
/// Holds no heap memory while [`is_idle`](Self::is_idle): partial frames and
/// open fragmented messages are the only things it stores.
#[derive(Debug)]
pub struct FrameReader {
    role: Role,
    max_message: usize,
    /// Bytes of an incomplete frame (or, after the callback stopped early,
    /// unparsed input). `Vec::new()` whenever empty.
    buf: Vec<u8>,
    /// The open fragmented message: its opcode and unmasked payload so far.
    fragments: Option<(OpCode, Vec<u8>)>,
}

impl FrameReader {
    /// A reader for `role` accepting messages of at most `max_message`
    /// payload bytes (per frame and reassembled). Allocates nothing.
    pub const fn new(role: Role, max_message: usize) -> Self {
        Self {
            role,
            max_message,
            buf: Vec::new(),
            fragments: None,
        }
    }

    /// True when no partial frame is buffered and no fragmented message is
    /// open; the reader then owns no heap memory.
    pub fn is_idle(&self) -> bool {
        self.buf.is_empty() && self.fragments.is_none()
    }

    /// Heap bytes currently held by the reader (for tests and metrics).
    pub fn buffered_capacity(&self) -> usize {
        self.buf.capacity() + self.fragments.as_ref().map_or(0, |(_, v)| v.capacity())
    }

    /// Decodes as many messages as possible from `input` (plus whatever was
    /// buffered), calling `out` for each one in order.
    ///
    /// Complete frames in `input` are decoded without staging them; an
    /// incomplete tail is copied into the reader. If `out` returns `false`,
    /// decoding stops and the unparsed rest of `input` is kept (copied) in the
    /// reader: nothing is discarded, and a later `feed` (even with empty
    /// input) resumes with it.
    ///
    /// A frame declaring more than `max_message` payload bytes is rejected as
    /// soon as its header is read, before anything is allocated for it. On
    /// error the reader releases its memory and the connection should be
    /// closed.
    pub fn feed(
        &mut self,
        input: &[u8],
        out: &mut impl FnMut(Message) -> bool,
    ) -> Result<(), FrameError> {
        let result = self.feed_inner(input, out);
        if result.is_err() {
            self.buf = Vec::new();
            self.fragments = None;
        }
        result
    }

    fn feed_inner(
        &mut self,
        mut input: &[u8],
        out: &mut impl FnMut(Message) -> bool,
    ) -> Result<(), FrameError> {
        // First complete the frame buffered from earlier calls, taking from
        // `input` only the bytes that frame still needs.
        while !self.buf.is_empty() {
            let header = match self.parse_header(&self.buf)? {
                Parsed::Need(n) => {
                    let take = (n - self.buf.len()).min(input.len());
                    if take == 0 {
                        return Ok(());
                    }
                    self.buf.extend_from_slice(&input[..take]);
                    input = &input[take..];
                    continue;
                }
                Parsed::Header(h) => h,
            };
            let total = header.header_len + header.payload_len;
            if self.buf.len() < total {
                let take = (total - self.buf.len()).min(input.len());
                // Grow with the bytes that actually arrived (doubling, capped
                // at the frame size): a peer that only sends a large header
                // must not make us reserve the whole frame.
                let want = self.buf.len() + take;
                if want > self.buf.capacity() {
                    let target = want.max(self.buf.capacity() * 2).min(total);
                    self.buf.reserve_exact(target - self.buf.len());
                }
                self.buf.extend_from_slice(&input[..take]);
                input = &input[take..];
                if self.buf.len() < total {
                    return Ok(());
                }
            }
            if self.buf.len() > total {
                // Left over by a callback that stopped early: may hold several
                // frames. Rare, so just parse buffer + input as one slice.
                let mut pending = std::mem::take(&mut self.buf);
                pending.extend_from_slice(input);
                return self.parse_slice(&pending, out);
            }
            let frame = std::mem::take(&mut self.buf);
            let message = self.on_frame(header, Payload::Owned(frame, header.header_len))?;
            if let Some(m) = message {
                if !out(m) {
                    self.stash(input, None);
                    return Ok(());
                }
            }
        }
        self.parse_slice(input, out)
    }

    /// Decodes complete frames straight from `data`; stashes the rest.
    fn parse_slice(
        &mut self,
        mut data: &[u8],
        out: &mut impl FnMut(Message) -> bool,
    ) -> Result<(), FrameError> {
        while !data.is_empty() {
            let header = match self.parse_header(data)? {
                Parsed::Need(_) => break,
                Parsed::Header(h) => h,
            };
            let total = header.header_len + header.payload_len;
            if data.len() < total {
                self.stash(data, Some(total));
                return Ok(());
            }
            let payload = Payload::Borrowed(&data[header.header_len..total]);
            data = &data[total..];
            if let Some(m) = self.on_frame(header, payload)? {
                if !out(m) {
                    break;
                }
            }
        }
        self.stash(data, None);
        Ok(())
    }

    /// Keeps `data` for later. `frame_len` is the length of the incomplete
    /// frame it starts, if known; capacity never exceeds it.
    fn stash(&mut self, data: &[u8], frame_len: Option<usize>) {
        debug_assert!(self.buf.is_empty());
        if data.is_empty() {
            self.buf = Vec::new();
            return;
        }
        let cap = data.len().max(MAX_HEADER);
        self.buf = Vec::with_capacity(frame_len.map_or(cap, |n| cap.min(n)));
        self.buf.extend_from_slice(data);
    }

    /// Parses and validates the header at the start of `data`.
    fn parse_header(&self, data: &[u8]) -> Result<Parsed, FrameError> {
        let [b0, b1, ..] = *data else {
            return Ok(Parsed::Need(2));
        };
        if b0 & 0x70 != 0 {
            return Err(FrameError::ReservedBits((b0 >> 4) & 0x7));
        }
        let opcode = OpCode::from_u8(b0 & 0x0F).ok_or(FrameError::UnknownOpcode(b0 & 0x0F))?;
        let fin = b0 & 0x80 != 0;
        let masked = b1 & 0x80 != 0;
        let len7 = b1 & 0x7F;
        match (masked, self.role) {
            (false, Role::Server) => return Err(FrameError::UnmaskedFrame),
            (true, Role::Client) => return Err(FrameError::MaskedFrame),
            _ => {}
        }
        if opcode.is_control() {
            if !fin {
                return Err(FrameError::FragmentedControlFrame);
            }
            if len7 > 125 {
                return Err(FrameError::ControlFrameTooLong);
            }
        } else {
            match (opcode, &self.fragments) {
                (OpCode::Continuation, None) => return Err(FrameError::UnexpectedContinuation),
                (OpCode::Text | OpCode::Binary, Some(_)) => {
                    return Err(FrameError::ExpectedContinuation)
                }
                _ => {}
            }
        }
        let ext = match len7 {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let len_end = 2 + ext;
        let header_len = len_end + if masked { 4 } else { 0 };
        // Judge the length as soon as it is known, before the mask arrives.
        if data.len() < len_end {
            return Ok(Parsed::Need(header_len));
        }
        let declared: u64 = match ext {
            2 => u64::from(u16::from_be_bytes([data[2], data[3]])),
            8 => {
                let mut b = [0u8; 8];
                b.copy_from_slice(&data[2..10]);
                u64::from_be_bytes(b)
            }
            _ => u64::from(len7),
        };
        let too_large = FrameError::MessageTooLarge {
            limit: self.max_message,
        };
        // Control frames are bounded by 125 above; the limit is for messages.
        let payload_len = match usize::try_from(declared) {
            Ok(n) if opcode.is_control() || n <= self.max_message => n,
            _ => return Err(too_large),
        };
        if let Some((_, so_far)) = &self.fragments {
            if !opcode.is_control() && payload_len > self.max_message - so_far.len() {
                return Err(too_large);
            }
        }
        if data.len() < header_len {
            return Ok(Parsed::Need(header_len));
        }
        let mask = masked.then(|| {
            let m = &data[header_len - 4..header_len];
            [m[0], m[1], m[2], m[3]]
        });
        Ok(Parsed::Header(Header {
            fin,
            opcode,
            mask,
            header_len,
            payload_len,
        }))
    }

    /// Handles one complete frame; returns the message it completes, if any.
    fn on_frame(&mut self, h: Header, payload: Payload<'_>) -> Result<Option<Message>, FrameError> {
        let message = match h.opcode {
            OpCode::Text | OpCode::Binary if !h.fin => {
                let mut v = Vec::with_capacity(payload.len());
                payload.append_to(&mut v, h.mask);
                self.fragments = Some((h.opcode, v));
                return Ok(None);
            }
            OpCode::Text => text(payload.into_bytes(h.mask))?,
            OpCode::Binary => Message::Binary(payload.into_bytes(h.mask)),
            OpCode::Continuation => {
                let Some((_, so_far)) = self.fragments.as_mut() else {
                    return Err(FrameError::UnexpectedContinuation);
                };
                payload.append_to(so_far, h.mask);
                if !h.fin {
                    return Ok(None);
                }
                match self.fragments.take() {
                    Some((OpCode::Text, v)) => text(Bytes::from(v))?,
                    Some((_, v)) => Message::Binary(Bytes::from(v)),
                    None => return Err(FrameError::UnexpectedContinuation),
                }
            }
            OpCode::Ping => Message::Ping(payload.into_bytes(h.mask)),
            OpCode::Pong => Message::Pong(payload.into_bytes(h.mask)),
            OpCode::Close => close(&payload.into_bytes(h.mask))?,
        };
        Ok(Some(message))
    }
}

/// Validates a complete text message.
fn text(b: Bytes) -> Result<Message, FrameError> {
    match std::str::from_utf8(&b) {
        Ok(_) => Ok(Message::Text(b)),
        Err(_) => Err(FrameError::InvalidUtf8),
    }
}

/// Parses and validates a close payload (RFC 6455 §5.5.1, §7.4).
fn close(p: &[u8]) -> Result<Message, FrameError> {
    let (code, reason) = match p {
        [] => return Ok(Message::Close(None)),
        [_] => return Err(FrameError::InvalidClosePayload),
        [hi, lo, reason @ ..] => (u16::from_be_bytes([*hi, *lo]), reason),
    };
    // 1004-1006 and 1015 are reserved, must not appear on the wire; 1016-2999
    // are unassigned or reserved for future RFCs.
    if !matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999) {
        return Err(FrameError::InvalidCloseCode(code));
    }
    let reason = std::str::from_utf8(reason).map_err(|_| FrameError::InvalidUtf8)?;
    Ok(Message::Close(Some((code, reason.to_owned()))))
}

/// XORs `buf` with the repeating 4-byte `mask`, starting at mask offset 0.
fn apply_mask(buf: &mut [u8], mask: [u8; 4]) {
    let wide = u64::from_ne_bytes([
        mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3],
    ]);
    let mut chunks = buf.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_ne_bytes(w) ^ wide).to_ne_bytes());
    }
    // The remainder starts at a multiple of 8, hence at mask offset 0.
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= mask[i & 3];
    }
}

/// Appends `src` to `dst`, unmasking it if `mask` is set.
fn unmask_extend(dst: &mut Vec<u8>, src: &[u8], mask: Option<[u8; 4]>) {
    let start = dst.len();
    dst.extend_from_slice(src);
    if let Some(m) = mask {
        apply_mask(&mut dst[start..], m);
    }
}

/// Length of a frame header for `payload_len` bytes, with or without a mask.
pub const fn header_len(payload_len: usize, masked: bool) -> usize {
    let base = if payload_len <= 125 {
        2
    } else if payload_len <= 0xFFFF {
        4
    } else {
        10
    };
    if masked {
        base + 4
    } else {
        base
    }
}

/// Appends a FIN frame header for `opcode` and `payload_len` to `dst`.
pub fn header(opcode: OpCode, payload_len: usize, mask: Option<[u8; 4]>, dst: &mut Vec<u8>) {
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    dst.push(0x80 | opcode as u8);
    if payload_len <= 125 {
        // Fits in 7 bits: checked just above.
        dst.push(mask_bit | payload_len as u8);
    } else if let Ok(n) = u16::try_from(payload_len) {
        dst.push(mask_bit | 126);
        dst.extend_from_slice(&n.to_be_bytes());
    } else {
        dst.push(mask_bit | 127);
        dst.extend_from_slice(&(payload_len as u64).to_be_bytes());
    }
    if let Some(m) = mask {
        dst.extend_from_slice(&m);
    }
}

/// Appends a complete FIN frame, masking the payload if `mask` is set.
pub fn encode_frame(opcode: OpCode, payload: &[u8], mask: Option<[u8; 4]>, dst: &mut Vec<u8>) {
    dst.reserve(header_len(payload.len(), mask.is_some()) + payload.len());
    header(opcode, payload.len(), mask, dst);
    unmask_extend(dst, payload, mask);
}

/// Appends an unmasked (server) text frame. `payload` must be UTF-8.
pub fn encode_text(payload: &[u8], dst: &mut Vec<u8>) {
    encode_frame(OpCode::Text, payload, None, dst);
}

/// Appends an unmasked (server) binary frame.
pub fn encode_binary(payload: &[u8], dst: &mut Vec<u8>) {
    encode_frame(OpCode::Binary, payload, None, dst);
}

/// Appends an unmasked (server) close frame; `reason` is truncated to 123
/// bytes (at a character boundary) to fit a control frame.
pub fn encode_close(code: u16, reason: &str, dst: &mut Vec<u8>) {
    encode_close_with(code, reason, None, dst);
}

/// Appends an unmasked (server) pong; payload truncated to 125 bytes.
pub fn encode_pong(payload: &[u8], dst: &mut Vec<u8>) {
    encode_frame(OpCode::Pong, &payload[..payload.len().min(125)], None, dst);
}

/// Appends an unmasked (server) ping; payload truncated to 125 bytes.
pub fn encode_ping(payload: &[u8], dst: &mut Vec<u8>) {
    encode_frame(OpCode::Ping, &payload[..payload.len().min(125)], None, dst);
}

/// Appends a masked (client) text frame with a random mask.
pub fn encode_client_text(payload: &[u8], dst: &mut Vec<u8>) {
    encode_frame(OpCode::Text, payload, Some(random_mask()), dst);
}

/// Appends a masked (client) close frame; `reason` truncated as in
/// [`encode_close`].
pub fn encode_client_close(code: u16, reason: &str, dst: &mut Vec<u8>) {
    encode_close_with(code, reason, Some(random_mask()), dst);
}

/// Appends a masked (client) pong; payload truncated to 125 bytes.
pub fn encode_client_pong(payload: &[u8], dst: &mut Vec<u8>) {
    let payload = &payload[..payload.len().min(125)];
    encode_frame(OpCode::Pong, payload, Some(random_mask()), dst);
}

fn encode_close_with(code: u16, reason: &str, mask: Option<[u8; 4]>, dst: &mut Vec<u8>) {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut payload = [0u8; 125];
    payload[..2].copy_from_slice(&code.to_be_bytes());
    payload[2..2 + end].copy_from_slice(&reason.as_bytes()[..end]);
    encode_frame(OpCode::Close, &payload[..2 + end], mask, dst);
}

/// A fresh 4-byte masking key from the OS CSPRNG.
fn random_mask() -> [u8; 4] {
    let mut m = [0u8; 4];
    // SystemRandom only fails when the OS has no entropy source at all; the
    // process cannot run safely then (same policy as `crate::random`).
    SystemRandom::new()
        .fill(&mut m)
        .expect("operating system random source unavailable");
    m
}

#[cfg(test)]
mod tests;
