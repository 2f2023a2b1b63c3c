//! Pair ids: a prefix per worker process, a dash, a counter in hex (`3f9a0c11d2e4-1c`).
//!
//! The prefix is random by default, so that ids stay unique across restarts and nodes. It can be given
//! instead (`node-worker capture --id-prefix`): then the same input gives the same output, byte for
//! byte, which is what comparing two builds on the same captures needs.

use std::fmt;

/// The longest prefix accepted: ids are read by people and stored with every pair.
const MAX_LEN: usize = 32;

/// A validated id prefix: 1 to 32 characters of `0-9`, `a-z` and `-`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdPrefix(String);

/// Why a text is not an id prefix.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IdPrefixError {
    #[error("an id prefix cannot be empty")]
    Empty,
    #[error("an id prefix has at most {MAX_LEN} characters, not {0}")]
    TooLong(usize),
    #[error("an id prefix is made of 0-9, a-z and '-' only, not {0:?}")]
    BadCharacter(char),
}

impl IdPrefix {
    pub fn parse(text: &str) -> Result<IdPrefix, IdPrefixError> {
        if text.is_empty() {
            return Err(IdPrefixError::Empty);
        }
        if let Some(c) = text
            .chars()
            .find(|c| !(c.is_ascii_digit() || c.is_ascii_lowercase() || *c == '-'))
        {
            return Err(IdPrefixError::BadCharacter(c));
        }
        if text.len() > MAX_LEN {
            return Err(IdPrefixError::TooLong(text.len()));
        }
        Ok(IdPrefix(text.to_string()))
    }

    /// Six random bytes in hex; the clock's nanoseconds if the OS has no randomness to give.
    pub fn random() -> IdPrefix {
        let mut random = [0u8; 6];
        if getrandom::fill(&mut random).is_err() {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default();
            random.copy_from_slice(&nanos.to_le_bytes()[..6]);
        }
        IdPrefix(random.iter().map(|b| format!("{b:02x}")).collect())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for IdPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Writes a pair's id into `id`: the prefix, a dash, the counter in hex. Once per pair, so into a
/// reused buffer and without the formatting machinery.
pub fn write_pair_id(id: &mut String, prefix: &IdPrefix, counter: u64) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    id.clear();
    id.push_str(prefix.as_str());
    id.push('-');
    let digits = (64 - counter.leading_zeros()).div_ceil(4).max(1);
    for shift in (0..digits).rev() {
        id.push(char::from(HEX[((counter >> (4 * shift)) & 0xf) as usize]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pair_ids_count_in_hex_after_the_prefix() {
        let prefix = IdPrefix::parse("ab12").unwrap();
        for counter in [0u64, 1, 15, 16, 255, 0x1c, 0xdead_beef, u64::MAX] {
            let mut id = "left over".to_string();
            write_pair_id(&mut id, &prefix, counter);
            assert_eq!(id, format!("ab12-{counter:x}"));
        }
    }

    #[test]
    fn prefixes_are_short_tokens() {
        for good in ["cmp", "a", "node-7", "0123456789abcdef0123456789abcdef"] {
            assert_eq!(IdPrefix::parse(good).unwrap().as_str(), good);
        }
        assert_eq!(IdPrefix::parse(""), Err(IdPrefixError::Empty));
        assert_eq!(
            IdPrefix::parse("Cmp"),
            Err(IdPrefixError::BadCharacter('C'))
        );
        assert_eq!(
            IdPrefix::parse("a b"),
            Err(IdPrefixError::BadCharacter(' '))
        );
        assert_eq!(
            IdPrefix::parse("a_b"),
            Err(IdPrefixError::BadCharacter('_'))
        );
        assert_eq!(IdPrefix::parse("é"), Err(IdPrefixError::BadCharacter('é')));
        assert_eq!(
            IdPrefix::parse(&"a".repeat(33)),
            Err(IdPrefixError::TooLong(33))
        );
    }

    #[test]
    fn random_prefixes_are_valid_and_differ() {
        let (a, b) = (IdPrefix::random(), IdPrefix::random());
        assert_eq!(IdPrefix::parse(a.as_str()), Ok(a.clone()));
        assert_eq!(a.as_str().len(), 12);
        assert_ne!(a, b);
    }
}
