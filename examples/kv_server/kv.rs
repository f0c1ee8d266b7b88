//! The key-value service of the `kv_server` example: a user's protocol written once, as a
//! [`Service`], and served on every model.
//!
//! One command per line (`\n`-terminated, at most [`MAX_LINE`] bytes), one reply line each:
//!
//! | request | reply |
//! |---|---|
//! | `SET key value` | `OK` (or `ERR full` at [`MAX_KEYS`] keys) |
//! | `GET key` | `VALUE value` or `NONE` |
//! | `DEL key` | `OK` or `NONE` |
//! | anything else | `ERR ...` |
//!
//! Keys are one word; a value is the rest of the line. Bounded: a line longer than
//! [`MAX_LINE`] closes the connection (a protocol error), and the store holds at most
//! [`MAX_KEYS`] keys.

use std::collections::HashMap;
use std::sync::RwLock;

use posa::net::{ProtocolError, Service};

/// The longest command line, newline included.
pub const MAX_LINE: usize = 4096;
/// The most keys the store holds.
pub const MAX_KEYS: usize = 100_000;

/// The store, shared by every connection on every thread.
#[derive(Debug, Default)]
pub struct Kv {
    map: RwLock<HashMap<String, String>>,
}

impl Kv {
    fn answer(&self, line: &str) -> String {
        let mut words = line.splitn(3, ' ');
        let (cmd, key, rest) = (words.next(), words.next(), words.next());
        let poisoned = |_| "ERR store unavailable".to_owned();
        match (cmd, key, rest) {
            (Some("SET"), Some(k), Some(v)) if !k.is_empty() => {
                let Ok(mut map) = self.map.write() else {
                    return poisoned(());
                };
                if map.len() >= MAX_KEYS && !map.contains_key(k) {
                    return "ERR full".into();
                }
                map.insert(k.to_owned(), v.to_owned());
                "OK".into()
            }
            (Some("GET"), Some(k), None) => match self.map.read() {
                Ok(map) => map
                    .get(k)
                    .map_or_else(|| "NONE".into(), |v| format!("VALUE {v}")),
                Err(_) => poisoned(()),
            },
            (Some("DEL"), Some(k), None) => match self.map.write() {
                Ok(mut map) => if map.remove(k).is_some() {
                    "OK"
                } else {
                    "NONE"
                }
                .into(),
                Err(_) => poisoned(()),
            },
            _ => "ERR expected SET key value, GET key or DEL key".into(),
        }
    }
}

impl Service for Kv {
    fn frame(&self, input: &[u8]) -> Result<Option<usize>, ProtocolError> {
        Ok(input.iter().position(|b| *b == b'\n').map(|i| i + 1))
    }

    fn call(&self, request: &[u8], reply: &mut Vec<u8>) {
        let line = String::from_utf8_lossy(request);
        let line = line.trim_end_matches(['\n', '\r']);
        reply.extend_from_slice(self.answer(line).as_bytes());
        reply.push(b'\n');
    }

    fn max_request(&self) -> usize {
        MAX_LINE
    }
}
