//! Identifiers as newtypes, validated where they enter the system.

use crate::validation::ValidationError;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Longest name Sluice accepts: a DNS label.
pub const MAX_NAME_LEN: usize = 63;

/// Checks that `value` is a DNS label: 1-63 of `a-z`, `0-9`, `-`, starting with a
/// letter and not ending with `-`. Names become container names, labels and URL
/// path segments, so nothing else is allowed.
pub fn check_dns_label(field: &str, value: &str) -> Result<(), ValidationError> {
    let fix = "use 1-63 lowercase letters, digits and '-', starting with a letter and not ending with '-'";
    let bad = |why: &str| ValidationError::new(field, format!("{:?} is invalid ({why}): {fix}", truncate(value)));
    if value.is_empty() {
        return Err(bad("empty"));
    }
    if value.len() > MAX_NAME_LEN {
        return Err(bad("too long"));
    }
    if !value.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
        return Err(bad("bad character"));
    }
    if !value.as_bytes()[0].is_ascii_lowercase() {
        return Err(bad("must start with a letter"));
    }
    if value.ends_with('-') {
        return Err(bad("ends with '-'"));
    }
    Ok(())
}

/// At most 80 characters of untrusted input, for error messages.
pub(crate) fn truncate(value: &str) -> String {
    value.chars().take(80).collect()
}

macro_rules! label_id {
    ($(#[$doc:meta])* $name:ident, $field:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Validates and wraps a name.
            pub fn new(value: impl Into<String>) -> Result<Self, ValidationError> {
                let value = value.into();
                check_dns_label($field, &value)?;
                Ok(Self(value))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::new(s).map_err(serde::de::Error::custom)
            }
        }
    };
}

label_id!(
    /// A function's name: a DNS label, unique in the cluster.
    FunctionName,
    "name"
);
label_id!(
    /// A host's name in the cluster: a DNS label.
    NodeId,
    "node"
);

/// An instance of a function; assigned by the coordinator, never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct InstanceId(pub u64);

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "i{}", self.0)
    }
}

impl std::str::FromStr for InstanceId {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.strip_prefix('i')
            .and_then(|n| n.parse().ok())
            .map(InstanceId)
            .ok_or_else(|| ValidationError::new("instance", format!("{:?} is not an instance id: expected i<number>, e.g. i42", truncate(s))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_dns_labels() {
        for ok in ["a", "hello", "hello-world-2", &"a".repeat(63)] {
            assert!(FunctionName::new(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn refuses_everything_else() {
        for bad in ["", "Foo", "1abc", "-a", "a-", "a_b", "../x", "a;rm -rf /", "héllo", "a b", &"a".repeat(64)] {
            let err = FunctionName::new(bad).unwrap_err();
            assert_eq!(err.field, "name");
            assert!(err.message.contains("lowercase"), "{err}");
        }
    }

    #[test]
    fn deserializing_validates() {
        assert!(serde_json::from_str::<FunctionName>("\"ok\"").is_ok());
        assert!(serde_json::from_str::<FunctionName>("\"Not Ok\"").is_err());
    }

    #[test]
    fn instance_ids_round_trip() {
        let id: InstanceId = "i42".parse().unwrap();
        assert_eq!(id, InstanceId(42));
        assert_eq!(id.to_string(), "i42");
        assert!("42".parse::<InstanceId>().is_err());
    }
}
