//! Byte-level helpers shared by the content manifest and the blob transfer encodings: a
//! writer and a bounds-checked reader with unsigned LEB128 varints (shortest form only, so
//! every value has exactly one encoding). Crate-private; the sync wire format keeps its own.

/// A decoding failure at the byte level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// The input ended inside a field.
    #[error("数据被截断：{0} (truncated in {0})")]
    Truncated(&'static str),
    /// A varint is over-long, not in its shortest form, or overflows 64 bits.
    #[error("整数编码无效：{0} (bad varint in {0})")]
    Varint(&'static str),
}

/// Appends fields to a byte buffer.
#[derive(Debug, Default)]
pub(crate) struct Writer {
    pub(crate) buf: Vec<u8>,
}

impl Writer {
    pub(crate) fn u8(&mut self, b: u8) {
        self.buf.push(b);
    }
    pub(crate) fn bytes(&mut self, b: &[u8]) {
        self.buf.extend_from_slice(b);
    }
    pub(crate) fn varint(&mut self, mut v: u64) {
        loop {
            let byte = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                self.buf.push(byte);
                return;
            }
            self.buf.push(byte | 0x80);
        }
    }
}

/// Reads fields from a byte slice, never past its end.
#[derive(Debug)]
pub(crate) struct Reader<'a> {
    pub(crate) buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf }
    }
    pub(crate) fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], CodecError> {
        if self.buf.len() < n {
            return Err(CodecError::Truncated(field));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }
    pub(crate) fn u8(&mut self, field: &'static str) -> Result<u8, CodecError> {
        Ok(self.take(1, field)?[0])
    }
    pub(crate) fn array<const N: usize>(
        &mut self,
        field: &'static str,
    ) -> Result<[u8; N], CodecError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, field)?);
        Ok(out)
    }
    pub(crate) fn varint(&mut self, field: &'static str) -> Result<u64, CodecError> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let b = self.u8(field)?;
            let bits = u64::from(b & 0x7f);
            if i == 9 && bits > 1 {
                return Err(CodecError::Varint(field));
            }
            v |= bits << (7 * i);
            if b & 0x80 == 0 {
                if i > 0 && b == 0 {
                    return Err(CodecError::Varint(field));
                }
                return Ok(v);
            }
        }
        Err(CodecError::Varint(field))
    }
    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_round_trip_and_shortest_form() {
        for v in [0u64, 1, 127, 128, 300, u32::MAX as u64, u64::MAX] {
            let mut w = Writer::default();
            w.varint(v);
            let mut r = Reader::new(&w.buf);
            assert_eq!(r.varint("v"), Ok(v));
            assert!(r.is_empty());
        }
        // 0 encoded in two bytes is refused.
        assert_eq!(
            Reader::new(&[0x80, 0x00]).varint("v"),
            Err(CodecError::Varint("v"))
        );
        assert_eq!(
            Reader::new(&[0x80]).varint("v"),
            Err(CodecError::Truncated("v"))
        );
    }
}
