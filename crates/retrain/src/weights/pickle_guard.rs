//! A pickle opcode scanner that proves a PyTorch checkpoint is data before anything reads it.
//!
//! Python's pickle is a small stack machine whose `GLOBAL` / `STACK_GLOBAL` / `INST` / `OBJ` /
//! `EXT*` opcodes import and call arbitrary code. A state dict needs only a handful of
//! constructors (OrderedDict, tensor rebuilds, storage types). This scanner simulates the stack
//! exactly enough to know every name a pickle would import, and refuses anything else. It was
//! written by hand: no maintained crate audits pickle streams without executing them.

use crate::error::{Error, Result};
use std::collections::HashMap;
use std::path::Path;

/// The only globals a state dict may import.
const ALLOWED_GLOBALS: &[&str] = &[
    "collections.OrderedDict",
    "torch._utils._rebuild_tensor",
    "torch._utils._rebuild_tensor_v2",
    "torch._utils._rebuild_parameter",
    "torch._utils._rebuild_parameter_with_state",
    "torch._tensor._rebuild_from_type_v2",
    "torch.Tensor",
    "torch.nn.parameter.Parameter",
    "torch.Size",
    "torch.FloatStorage",
    "torch.DoubleStorage",
    "torch.HalfStorage",
    "torch.BFloat16Storage",
    "torch.LongStorage",
    "torch.IntStorage",
    "torch.ShortStorage",
    "torch.CharStorage",
    "torch.ByteStorage",
    "torch.BoolStorage",
    "torch.UntypedStorage",
    "torch.float32",
    "torch.float16",
    "torch.bfloat16",
    "torch.float64",
    "torch.int64",
    "torch.int32",
    "torch.uint8",
    "torch.bool",
];

/// Deepest stack a state dict can plausibly need; deeper is treated as hostile.
const MAX_STACK: usize = 100_000;

#[derive(Clone)]
enum Item {
    Mark,
    Str(String),
    Other,
}

struct Scanner<'a> {
    data: &'a [u8],
    pos: usize,
    path: &'a Path,
    stack: Vec<Item>,
    memo: HashMap<u64, Item>,
}

impl<'a> Scanner<'a> {
    fn err(&self, message: impl Into<String>) -> Error {
        Error::format(
            self.path,
            format!("pickle at byte {}: {}", self.pos, message.into()),
        )
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or_else(|| self.err(format!("argument of {n} bytes runs past the end")))?;
        let bytes = &self.data[self.pos..end];
        self.pos = end;
        Ok(bytes)
    }

    fn uint(&mut self, n: usize) -> Result<u64> {
        let bytes = self.take(n)?;
        Ok(bytes
            .iter()
            .rev()
            .fold(0u64, |acc, &b| (acc << 8) | u64::from(b)))
    }

    fn line(&mut self) -> Result<&'a str> {
        let rest = &self.data[self.pos..];
        let len = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| self.err("unterminated text argument"))?;
        let text = std::str::from_utf8(&rest[..len]).map_err(|_| self.err("text is not UTF-8"))?;
        self.pos += len + 1;
        Ok(text)
    }

    fn sized(&mut self, len_bytes: usize) -> Result<&'a [u8]> {
        let n = self.uint(len_bytes)?;
        let n = usize::try_from(n).map_err(|_| self.err("length overflows"))?;
        self.take(n)
    }

    fn push(&mut self, item: Item) -> Result<()> {
        if self.stack.len() >= MAX_STACK {
            return Err(self.err("stack deeper than any state dict needs"));
        }
        self.stack.push(item);
        Ok(())
    }

    fn pop(&mut self) -> Result<Item> {
        match self.stack.pop() {
            Some(Item::Mark) | None => Err(self.err("stack underflow")),
            Some(item) => Ok(item),
        }
    }

    fn pop_n(&mut self, n: usize) -> Result<()> {
        for _ in 0..n {
            self.pop()?;
        }
        Ok(())
    }

    fn pop_mark(&mut self) -> Result<()> {
        loop {
            match self.stack.pop() {
                Some(Item::Mark) => return Ok(()),
                Some(_) => {}
                None => return Err(self.err("no MARK to pop to")),
            }
        }
    }

    fn top(&self) -> Result<Item> {
        self.stack
            .last()
            .cloned()
            .ok_or_else(|| self.err("memo store on an empty stack"))
    }

    fn check_global(&self, module: &str, name: &str) -> Result<()> {
        let global = format!("{module}.{name}");
        if ALLOWED_GLOBALS.contains(&global.as_str()) {
            Ok(())
        } else {
            Err(Error::UnsafePickle {
                path: self.path.to_path_buf(),
                global,
            })
        }
    }

    fn string(bytes: &[u8]) -> Item {
        Item::Str(String::from_utf8_lossy(bytes).into_owned())
    }

    /// Scan one pickle; returns the offset just past its STOP opcode.
    fn run(&mut self) -> Result<usize> {
        loop {
            let op = *self.take(1)?.first().expect("one byte");
            match op {
                b'.' => return Ok(self.pos),
                b'(' => self.push(Item::Mark)?,
                b'0' => self.pop_n(1)?,
                b'1' => self.pop_mark()?,
                b'2' => {
                    let top = self.top()?;
                    self.push(top)?;
                }
                // Numbers, None, booleans, empty containers: push an opaque value.
                b'F' | b'I' | b'L' => {
                    self.line()?;
                    self.push(Item::Other)?;
                }
                b'J' => {
                    self.take(4)?;
                    self.push(Item::Other)?;
                }
                b'K' => {
                    self.take(1)?;
                    self.push(Item::Other)?;
                }
                b'M' => {
                    self.take(2)?;
                    self.push(Item::Other)?;
                }
                b'G' => {
                    self.take(8)?;
                    self.push(Item::Other)?;
                }
                0x8a => {
                    self.sized(1)?;
                    self.push(Item::Other)?;
                }
                0x8b => {
                    self.sized(4)?;
                    self.push(Item::Other)?;
                }
                b'N' | 0x88 | 0x89 | b'}' | b']' | b')' | 0x8f | 0x97 => self.push(Item::Other)?,
                // Strings (text that STACK_GLOBAL may use as a module or name).
                b'S' | b'V' => {
                    let text = self.line()?;
                    self.push(Item::Str(text.trim_matches(['\'', '"']).to_string()))?;
                }
                b'T' | b'X' => {
                    let s = Self::string(self.sized(4)?);
                    self.push(s)?;
                }
                b'U' | 0x8c => {
                    let s = Self::string(self.sized(1)?);
                    self.push(s)?;
                }
                0x8d => {
                    let s = Self::string(self.sized(8)?);
                    self.push(s)?;
                }
                // Bytes.
                b'B' => {
                    self.sized(4)?;
                    self.push(Item::Other)?;
                }
                b'C' => {
                    self.sized(1)?;
                    self.push(Item::Other)?;
                }
                0x8e | 0x96 => {
                    self.sized(8)?;
                    self.push(Item::Other)?;
                }
                // Persistent ids: storage references, resolved by the loader, never by pickle.
                b'P' => {
                    self.line()?;
                    self.push(Item::Other)?;
                }
                b'Q' => {
                    self.pop_n(1)?;
                    self.push(Item::Other)?;
                }
                // Calls: only reachable callables are the allowed globals checked below.
                b'R' | 0x81 => {
                    self.pop_n(2)?;
                    self.push(Item::Other)?;
                }
                0x92 => {
                    self.pop_n(3)?;
                    self.push(Item::Other)?;
                }
                b'b' | b'a' => self.pop_n(1)?,
                b's' => self.pop_n(2)?,
                b'e' | b'u' | 0x90 => self.pop_mark()?,
                b'd' | b'l' | b't' | 0x91 => {
                    self.pop_mark()?;
                    self.push(Item::Other)?;
                }
                0x85..=0x87 => {
                    self.pop_n(usize::from(op - 0x84))?;
                    self.push(Item::Other)?;
                }
                // Memo.
                b'g' => {
                    let key: u64 = self
                        .line()?
                        .parse()
                        .map_err(|_| self.err("bad GET index"))?;
                    self.memo_get(key)?;
                }
                b'h' => {
                    let key = self.uint(1)?;
                    self.memo_get(key)?;
                }
                b'j' => {
                    let key = self.uint(4)?;
                    self.memo_get(key)?;
                }
                b'p' => {
                    let key: u64 = self
                        .line()?
                        .parse()
                        .map_err(|_| self.err("bad PUT index"))?;
                    self.memo_put(key)?;
                }
                b'q' => {
                    let key = self.uint(1)?;
                    self.memo_put(key)?;
                }
                b'r' => {
                    let key = self.uint(4)?;
                    self.memo_put(key)?;
                }
                0x94 => {
                    let key = self.memo.len() as u64;
                    self.memo_put(key)?;
                }
                // Imports.
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    self.check_global(module, name)?;
                    self.push(Item::Other)?;
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    match (module, name) {
                        (Item::Str(m), Item::Str(n)) => self.check_global(&m, &n)?,
                        _ => return Err(self.err("STACK_GLOBAL on values that are not names")),
                    }
                    self.push(Item::Other)?;
                }
                b'i' => {
                    let module = self.line()?.to_string();
                    let name = self.line()?;
                    return Err(Error::UnsafePickle {
                        path: self.path.to_path_buf(),
                        global: format!("{module}.{name} (INST)"),
                    });
                }
                b'o' | 0x82..=0x84 => {
                    return Err(Error::UnsafePickle {
                        path: self.path.to_path_buf(),
                        global: format!("opcode 0x{op:02x} (object construction)"),
                    })
                }
                0x80 => {
                    self.take(1)?;
                }
                0x95 => {
                    self.take(8)?;
                }
                0x98 => {}
                other => return Err(self.err(format!("unknown opcode 0x{other:02x}"))),
            }
        }
    }

    fn memo_get(&mut self, key: u64) -> Result<()> {
        let item = self
            .memo
            .get(&key)
            .cloned()
            .ok_or_else(|| self.err(format!("memo key {key} read before it was written")))?;
        self.push(item)
    }

    fn memo_put(&mut self, key: u64) -> Result<()> {
        let top = self.top()?;
        self.memo.insert(key, top);
        Ok(())
    }
}

/// Check `count` consecutive pickles at the start of `data`; returns the offset after the last.
pub fn check_pickles(data: &[u8], count: usize, path: &Path) -> Result<usize> {
    let mut offset = 0;
    for _ in 0..count {
        let mut scanner = Scanner {
            data,
            pos: offset,
            path,
            stack: Vec::new(),
            memo: HashMap::new(),
        };
        offset = scanner.run()?;
    }
    Ok(offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(bytes: &[u8]) -> Result<usize> {
        check_pickles(bytes, 1, Path::new("test.pth"))
    }

    #[test]
    fn refuses_os_system_global() {
        // pickle.dumps of a __reduce__ returning (os.system, ("touch x",)) at protocol 0.
        let evil = b"cos\nsystem\n(S'touch x'\ntR.";
        let err = check(evil).unwrap_err().to_string();
        assert!(err.contains("os.system"), "{err}");
    }

    #[test]
    fn refuses_stack_global_hidden_behind_pops() {
        // Push 'os' 'system', then decoy names that are popped again, then STACK_GLOBAL.
        let mut p = vec![0x80, 4];
        for s in ["os", "system", "collections", "OrderedDict"] {
            p.push(0x8c);
            p.push(s.len() as u8);
            p.extend_from_slice(s.as_bytes());
        }
        p.extend_from_slice(&[b'0', b'0', 0x93, b')', b'R', b'.']);
        let err = check(&p).unwrap_err().to_string();
        assert!(err.contains("os.system"), "{err}");
    }

    #[test]
    fn accepts_ordered_dict_and_reports_end() {
        let ok = b"\x80\x02ccollections\nOrderedDict\nq\x00)Rq\x01.rest";
        assert_eq!(check(ok).unwrap(), ok.len() - 4);
    }

    #[test]
    fn truncated_and_garbage_streams_are_errors_not_panics() {
        for bad in [
            &b""[..],
            b"\x80",
            b"X\xff\xff\xff\xff",
            b"(((",
            b"0.",
            b"h\x05.",
        ] {
            assert!(check(bad).is_err());
        }
    }
}
