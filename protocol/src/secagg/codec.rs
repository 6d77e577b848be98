//! Byte layout shared by every SecAgg message: a one-byte message tag, then
//! fields that are either fixed-size or prefixed with a big-endian `u32`
//! length. Explicit lengths (rather than separators) keep concatenated fields
//! unambiguous, which matters because the same layout feeds HKDF `info` and
//! AEAD associated data.

use super::error::SecAggError;

pub(crate) struct Writer(Vec<u8>);

impl Writer {
    pub(crate) fn new(tag: u8) -> Self {
        Writer(vec![tag])
    }

    /// Starts an untagged buffer for KDF labels and associated data.
    pub(crate) fn label(label: &str) -> Self {
        let mut w = Writer(Vec::new());
        w.bytes(label.as_bytes());
        w
    }

    pub(crate) fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }

    pub(crate) fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub(crate) fn fixed(&mut self, v: &[u8]) -> &mut Self {
        self.0.extend_from_slice(v);
        self
    }

    /// Length-prefixed bytes. Lengths beyond `u32` cannot come from this
    /// crate (names and ciphertexts are small), so saturating is only a guard.
    pub(crate) fn bytes(&mut self, v: &[u8]) -> &mut Self {
        let len = u32::try_from(v.len()).unwrap_or(u32::MAX);
        self.u32(len);
        self.0.extend_from_slice(v);
        self
    }

    pub(crate) fn finish(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.0)
    }
}

pub(crate) struct Reader<'a> {
    what: &'static str,
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(what: &'static str, tag: u8, bytes: &'a [u8]) -> Result<Self, SecAggError> {
        let mut r = Reader { what, rest: bytes };
        let got = r.u8()?;
        if got != tag {
            return Err(r.err(format!("message tag {got}, expected {tag}")));
        }
        Ok(r)
    }

    pub(crate) fn err(&self, reason: String) -> SecAggError {
        SecAggError::Malformed {
            what: self.what,
            reason,
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], SecAggError> {
        if self.rest.len() < n {
            return Err(self.err(format!("needs {n} more bytes, {} left", self.rest.len())));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, SecAggError> {
        Ok(self.take(1)?[0])
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], SecAggError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    pub(crate) fn bytes(&mut self) -> Result<&'a [u8], SecAggError> {
        let len = u32::from_be_bytes(self.array::<4>()?);
        let len = usize::try_from(len).map_err(|_| self.err("length overflows usize".into()))?;
        self.take(len)
    }

    pub(crate) fn string(&mut self) -> Result<String, SecAggError> {
        let raw = self.bytes()?;
        String::from_utf8(raw.to_vec()).map_err(|_| self.err("a name is not UTF-8".into()))
    }

    pub(crate) fn end(self) -> Result<(), SecAggError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(self.err(format!("{} trailing bytes", self.rest.len())))
        }
    }
}
