//! One problem with one field, worded the way the Kubernetes API server
//! words it (`spec.rounds: Invalid value: 0: must be greater than or equal
//! to 1`), so clients and tests see the same text from our test API server
//! as from a real cluster.

use std::fmt;

use serde_json::Value;

/// The class of a field problem (Kubernetes' `field.ErrorType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorType {
    /// A required field is missing.
    Required,
    /// The value is malformed or out of range.
    Invalid,
    /// The value is not one of an enumerated set.
    NotSupported,
    /// A list has more items than allowed.
    TooMany,
    /// The field is not in the schema.
    Unknown,
    /// A set item, or a map-list key, appears twice.
    Duplicate,
}

impl ErrorType {
    fn label(self) -> &'static str {
        match self {
            ErrorType::Required => "Required value",
            ErrorType::Invalid => "Invalid value",
            ErrorType::NotSupported => "Unsupported value",
            ErrorType::TooMany => "Too many",
            ErrorType::Unknown => "Unknown field",
            ErrorType::Duplicate => "Duplicate value",
        }
    }
}

/// A problem with the field at `path`, e.g. `spec.data.vaults[0].name`.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    pub path: String,
    pub error_type: ErrorType,
    /// The offending value, shown after the error type (absent for
    /// required and unknown fields).
    pub value: Option<Value>,
    pub detail: String,
}

impl FieldError {
    pub fn new(
        path: impl Into<String>,
        error_type: ErrorType,
        value: Option<Value>,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            path: path.into(),
            error_type,
            value,
            detail: detail.into(),
        }
    }
}

/// Values longer than this are cut, as the API server does, so one huge
/// field cannot swamp the message.
const MAX_VALUE_CHARS: usize = 80;

/// The value as the API server prints it: JSON for scalars, the type name
/// for objects and arrays.
pub fn render_value(value: &Value) -> String {
    let text = match value {
        Value::Object(_) => "\"object\"".to_string(),
        Value::Array(_) => "\"array\"".to_string(),
        other => other.to_string(),
    };
    if text.chars().count() > MAX_VALUE_CHARS {
        let cut: String = text.chars().take(MAX_VALUE_CHARS).collect();
        format!("{cut}...")
    } else {
        text
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.error_type.label())?;
        match &self.value {
            // A duplicate map-list item is shown by its key fields, which
            // are what the reader must change.
            Some(value) if self.error_type == ErrorType::Duplicate => write!(f, ": {value}")?,
            Some(value) => write!(f, ": {}", render_value(value))?,
            None => {}
        }
        if !self.detail.is_empty() {
            write!(f, ": {}", self.detail)?;
        }
        Ok(())
    }
}

/// Appends a property name to a field path (`spec` + `rounds`).
pub fn child(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}.{name}")
    }
}

/// Appends a list index to a field path (`spec.data.vaults` + 0).
pub fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn prints_like_the_api_server() {
        let e = FieldError::new(
            "spec.rounds",
            ErrorType::Invalid,
            Some(json!(0)),
            "must be greater than or equal to 1",
        );
        assert_eq!(
            e.to_string(),
            "spec.rounds: Invalid value: 0: must be greater than or equal to 1"
        );
        let e = FieldError::new("spec.model", ErrorType::Required, None, "");
        assert_eq!(e.to_string(), "spec.model: Required value");
        assert_eq!(render_value(&json!({"a": 1})), "\"object\"");
        assert!(render_value(&json!("x".repeat(200))).ends_with("..."));
    }
}
