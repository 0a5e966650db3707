//! Validation of caller-supplied document fields. Each check names the field it rejects.

use crate::error::{EngineError, Result};

/// Most tags on one document.
pub const MAX_TAGS: usize = 64;
/// Longest tag, in characters.
pub const MAX_TAG_CHARS: usize = 64;
/// Longest title, in characters.
pub const MAX_TITLE_CHARS: usize = 512;
/// Largest metadata object, serialised.
pub const MAX_METADATA_BYTES: usize = 64 * 1024;

/// Checks a title's length as sent (the limit the API documents), then trims it.
pub fn title(raw: &str) -> Result<String> {
    let t = raw.trim();
    if t.is_empty() {
        return Err(EngineError::invalid("title", "must not be empty"));
    }
    if raw.chars().count() > MAX_TITLE_CHARS {
        return Err(EngineError::invalid(
            "title",
            format!("must be at most {MAX_TITLE_CHARS} characters"),
        ));
    }
    if t.chars().any(char::is_control) {
        return Err(EngineError::invalid(
            "title",
            "must not contain control characters",
        ));
    }
    Ok(t.to_owned())
}

/// Trims, checks, sorts and de-duplicates tags.
pub fn tags(raw: &[String]) -> Result<Vec<String>> {
    let mut out = Vec::with_capacity(raw.len());
    for (i, t) in raw.iter().enumerate() {
        let t = t.trim();
        let field = || format!("tags[{i}]");
        if t.is_empty() {
            return Err(EngineError::invalid(field(), "must not be empty"));
        }
        if t.chars().count() > MAX_TAG_CHARS {
            return Err(EngineError::invalid(
                field(),
                format!("must be at most {MAX_TAG_CHARS} characters"),
            ));
        }
        if t.chars().any(|c| c.is_control() || c == ',') {
            return Err(EngineError::invalid(
                field(),
                "must not contain commas or control characters",
            ));
        }
        out.push(t.to_owned());
    }
    out.sort();
    out.dedup();
    if out.len() > MAX_TAGS {
        return Err(EngineError::invalid(
            "tags",
            format!("at most {MAX_TAGS} tags"),
        ));
    }
    Ok(out)
}

/// Checks metadata is a JSON object of bounded size.
pub fn metadata(value: serde_json::Value) -> Result<serde_json::Value> {
    if !value.is_object() {
        return Err(EngineError::invalid("metadata", "must be a JSON object"));
    }
    if value.to_string().len() > MAX_METADATA_BYTES {
        return Err(EngineError::invalid(
            "metadata",
            format!("must be at most {MAX_METADATA_BYTES} bytes as JSON"),
        ));
    }
    Ok(value)
}

/// Parses metadata given as a JSON string (multipart uploads).
pub fn metadata_str(raw: &str) -> Result<serde_json::Value> {
    let v: serde_json::Value = serde_json::from_str(raw)
        .map_err(|e| EngineError::invalid("metadata", format!("is not valid JSON: {e}")))?;
    metadata(v)
}

/// Deserializes a struct only from a JSON object: serde reads structs from arrays too, so
/// `"filter": []` would otherwise pass as an empty filter.
pub fn object<'de, D, T>(d: D) -> std::result::Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    use serde::Deserialize as _;
    let map = serde_json::Map::<String, serde_json::Value>::deserialize(d)?;
    T::deserialize(serde_json::Value::Object(map)).map_err(serde::de::Error::custom)
}

/// Deserializes a field that may be absent (`None`), null (`Some(None)`) or a value
/// (`Some(Some(v))`); use with `#[serde(default)]`.
pub fn nullable<'de, D, T>(d: D) -> std::result::Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    use serde::Deserialize as _;
    Option::<T>::deserialize(d).map(Some)
}

/// Checks a caller's name for something (a session, a memory's key): 1 to `max` characters,
/// no surrounding spaces, no control characters.
pub fn label(field: &str, v: &str, max: usize) -> Result<()> {
    let n = v.chars().count();
    if n == 0 || n > max || v.trim() != v || v.chars().any(char::is_control) {
        return Err(EngineError::invalid(
            field,
            format!(
                "must be 1 to {max} characters, without surrounding spaces or control characters"
            ),
        ));
    }
    Ok(())
}

/// Checks a page size: 1..=`max`, default `default`.
pub fn limit(raw: Option<u32>, default: u32, max: u32) -> Result<u32> {
    match raw {
        None => Ok(default),
        Some(n) if (1..=max).contains(&n) => Ok(n),
        Some(_) => Err(EngineError::invalid(
            "limit",
            format!("must be between 1 and {max}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_title_is_measured_as_sent_then_trimmed() {
        assert_eq!(title("  a title ").unwrap(), "a title");
        // The documented limit counts what was sent: trailing spaces past it are refused too.
        let padded = format!("x{}", "\u{a0}".repeat(MAX_TITLE_CHARS));
        assert!(title(&padded).is_err());
        assert!(title(&"y".repeat(MAX_TITLE_CHARS)).is_ok());
    }

    #[test]
    fn tags_are_normalised() {
        let t = tags(&[" b ".into(), "a".into(), "b".into()]).unwrap();
        assert_eq!(t, vec!["a", "b"]);
    }

    #[test]
    fn bad_tag_names_its_index() {
        let e = tags(&["ok".into(), "  ".into()]).unwrap_err();
        assert!(matches!(e, EngineError::Invalid { field, .. } if field == "tags[1]"));
    }

    #[test]
    fn metadata_must_be_object() {
        assert!(metadata(serde_json::json!([1])).is_err());
        assert!(metadata(serde_json::json!({"a": 1})).is_ok());
        assert!(metadata_str("{nope").is_err());
    }
}
