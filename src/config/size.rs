//! Byte sizes written the way people write them: `64KiB`, `16MiB`, `4096`.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A size in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize(pub u64);

const UNITS: &[(&str, u64)] = &[
    ("TiB", 1 << 40),
    ("GiB", 1 << 30),
    ("MiB", 1 << 20),
    ("KiB", 1 << 10),
    ("GB", 1_000_000_000),
    ("MB", 1_000_000),
    ("kB", 1_000),
    ("KB", 1_000),
    ("B", 1),
];

impl ByteSize {
    pub fn parse(text: &str) -> Result<Self, String> {
        let trimmed = text.trim();
        let (number, multiplier) = UNITS
            .iter()
            .find_map(|(unit, m)| trimmed.strip_suffix(unit).map(|n| (n.trim(), *m)))
            .unwrap_or((trimmed, 1));
        number
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(multiplier))
            .map(ByteSize)
            .ok_or_else(|| {
                format!("`{text}` is not a size; write it like `4096`, `64KiB` or `16MiB`")
            })
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (unit, m) in &UNITS[..4] {
            if self.0 >= *m && self.0.is_multiple_of(*m) {
                return write!(f, "{}{unit}", self.0 / m);
            }
        }
        write!(f, "{}B", self.0)
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Number(n) => Ok(ByteSize(n)),
            Raw::Text(t) => ByteSize::parse(&t).map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_binary_and_decimal_units() {
        assert_eq!(ByteSize::parse("64KiB"), Ok(ByteSize(65_536)));
        assert_eq!(ByteSize::parse("16 MiB"), Ok(ByteSize(16 << 20)));
        assert_eq!(ByteSize::parse("1500"), Ok(ByteSize(1500)));
        assert_eq!(ByteSize::parse("2MB"), Ok(ByteSize(2_000_000)));
        assert!(ByteSize::parse("lots").is_err());
        assert!(ByteSize::parse("-1KiB").is_err());
        assert_eq!(ByteSize(65_536).to_string(), "64KiB");
        assert_eq!(ByteSize(1500).to_string(), "1500B");
        assert_eq!(ByteSize(1 << 40).to_string(), "1TiB");
        assert_eq!(ByteSize::parse("2TiB"), Ok(ByteSize(2 << 40)));
        assert!(
            ByteSize::parse("99999999999TiB").is_err(),
            "overflow is an error"
        );
    }
}
