//! Regex pattern sets (DeepSpeed's parameter-name patterns), serialized as their source strings.

use crate::SchemaError;
use regex::RegexSet;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A set of regexes matched with `re.match` semantics (anchored at the start, like Python's
/// `re.match`, which DeepSpeed uses).
///
/// ```
/// let p = uc_schema::PatternSet::new(vec![r".*\.qkv\.weight$".into()]).unwrap();
/// assert!(p.matches("blocks.0.qkv.weight"));
/// assert!(!p.matches("blocks.0.qkv.bias"));
/// ```
#[derive(Debug, Clone)]
pub struct PatternSet {
    sources: Vec<String>,
    set: RegexSet,
}

impl PatternSet {
    /// Compiles the patterns; a bad one is [`SchemaError::BadPattern`].
    pub fn new(sources: Vec<String>) -> Result<PatternSet, SchemaError> {
        for s in &sources {
            if let Err(e) = regex::Regex::new(s) {
                return Err(SchemaError::BadPattern {
                    pattern: s.clone(),
                    error: e.to_string(),
                });
            }
        }
        let anchored: Vec<String> = sources.iter().map(|s| format!("^(?:{s})")).collect();
        let set = RegexSet::new(&anchored).map_err(|e| SchemaError::BadPattern {
            pattern: sources.join(" | "),
            error: e.to_string(),
        })?;
        Ok(PatternSet { sources, set })
    }

    /// An empty set that matches nothing.
    pub fn empty() -> PatternSet {
        PatternSet::new(Vec::new()).expect("empty set compiles")
    }

    /// True when any pattern matches at the start of `name`.
    pub fn matches(&self, name: &str) -> bool {
        self.set.is_match(name)
    }

    /// Index of the first pattern that matches.
    pub fn first_match(&self, name: &str) -> Option<usize> {
        self.set.matches(name).iter().next()
    }

    /// The source strings.
    pub fn sources(&self) -> &[String] {
        &self.sources
    }

    /// Number of patterns.
    pub fn len(&self) -> usize {
        self.sources.len()
    }

    /// True when there are no patterns.
    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }
}

impl PartialEq for PatternSet {
    fn eq(&self, other: &Self) -> bool {
        self.sources == other.sources
    }
}

impl Default for PatternSet {
    fn default() -> Self {
        PatternSet::empty()
    }
}

impl Serialize for PatternSet {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.sources.serialize(s)
    }
}

impl<'de> Deserialize<'de> for PatternSet {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Vec::<String>::deserialize(d)?;
        PatternSet::new(v).map_err(serde::de::Error::custom)
    }
}
