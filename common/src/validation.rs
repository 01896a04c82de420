//! The one error type for rejected input: it names the field and says how to fix it.

use serde::Serialize;

/// Input that was refused. `field` is the dotted path of the offending field
/// (`"name"`, `"limits.memory_mb"`), `message` says what is wrong and what to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ValidationError {
    pub field: String,
    pub message: String,
}

impl ValidationError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: field.into(), message: message.into() }
    }

    /// The same error under a parent field, so nested specs report full paths.
    pub fn within(self, parent: &str) -> Self {
        Self { field: format!("{parent}.{}", self.field), message: self.message }
    }
}
