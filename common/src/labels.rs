//! Labels: `key=value` pairs on functions and nodes, read by rule scopes,
//! node selectors and placement preferences.

use crate::ids::truncate;
use crate::validation::ValidationError;
use std::collections::BTreeMap;

/// Labels of a function or a node.
pub type Labels = BTreeMap<String, String>;

/// Most labels one function or node may carry.
pub const MAX_LABELS: usize = 32;
/// Longest label key or value.
pub const MAX_LABEL_LEN: usize = 63;

/// Checks one key or value: 1-63 of `a-z A-Z 0-9 . _ / -`, so labels read the
/// same in a rule file, a flag and a URL.
pub fn check_label_part(field: &str, part: &str) -> Result<(), ValidationError> {
    let ok = !part.is_empty() && part.len() <= MAX_LABEL_LEN && part.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'/' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(ValidationError::new(field, format!("{:?} is not a label key or value: use 1-{MAX_LABEL_LEN} letters, digits and . _ / -", truncate(part))))
    }
}

/// Checks a whole label set.
pub fn validate(field: &str, labels: &Labels) -> Result<(), ValidationError> {
    if labels.len() > MAX_LABELS {
        return Err(ValidationError::new(field, format!("{} labels: use at most {MAX_LABELS}", labels.len())));
    }
    for (k, v) in labels {
        let at = format!("{field}.{}", truncate(k));
        check_label_part(&at, k)?;
        check_label_part(&at, v)?;
    }
    Ok(())
}

/// Parses `key=value` (a flag's value); the field names the flag in errors.
pub fn parse_pair(field: &str, text: &str) -> Result<(String, String), ValidationError> {
    let (k, v) = text.split_once('=').ok_or_else(|| ValidationError::new(field, format!("{:?} is not key=value: write it as zone=edge", truncate(text))))?;
    check_label_part(field, k)?;
    check_label_part(field, v)?;
    Ok((k.to_string(), v.to_string()))
}

/// True when every pair of `selector` is in `labels`.
pub fn matches(selector: &Labels, labels: &Labels) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_parse_and_bad_ones_name_the_field() {
        assert_eq!(parse_pair("label", "zone=edge").unwrap(), ("zone".into(), "edge".into()));
        for bad in ["zone", "=edge", "zone=", "zo ne=x", "a=b=c"] {
            assert_eq!(parse_pair("label", bad).unwrap_err().field, "label", "{bad}");
        }
    }

    #[test]
    fn selectors_match_subsets() {
        let labels: Labels = [("zone".to_string(), "edge".to_string()), ("gpu".to_string(), "no".to_string())].into();
        assert!(matches(&Labels::new(), &labels));
        assert!(matches(&[("zone".to_string(), "edge".to_string())].into(), &labels));
        assert!(!matches(&[("zone".to_string(), "core".to_string())].into(), &labels));
    }
}
