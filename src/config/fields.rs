//! A small field walker over a JSON object, used by [`crate::config`].
//!
//! Why hand-written rather than `serde` derive: serde stops at the first error and
//! reports 0-based paths, while an operator fixing a config wants every error at
//! once, each naming its field the way Kong's Admin API does (`routes[2].target`,
//! 1-based like Lua). The walker also writes the normalized config (defaults
//! filled, absent optional fields as `null`) as it reads, so the defaults live in
//! exactly one place: the calls in `config/mod.rs`.

use serde_json::{Map, Value};
use std::fmt;

/// One invalid field: where it is and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Dotted field path, arrays 1-based: `routes[2].target`.
    pub path: String,
    /// Short, lowercase description of the problem.
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Result of checking one value: the typed value, or why it is invalid.
pub type Check<T> = Result<T, String>;

/// Reads the fields of one JSON object (a "record"), collecting errors.
#[derive(Debug)]
pub struct Fields<'e> {
    path: String,
    input: Map<String, Value>,
    out: Map<String, Value>,
    errs: &'e mut Vec<FieldError>,
}

impl<'e> Fields<'e> {
    /// Walks `value` as the record at `path` (`""` for the root).
    pub fn new(path: String, value: Value, errs: &'e mut Vec<FieldError>) -> Option<Self> {
        match value {
            Value::Object(input) => Some(Fields {
                path,
                input,
                out: Map::new(),
                errs,
            }),
            // An empty Lua table arrives as an empty array or object alike.
            Value::Array(a) if a.is_empty() => Some(Fields {
                path,
                input: Map::new(),
                out: Map::new(),
                errs,
            }),
            _ => {
                let path = if path.is_empty() {
                    "config".into()
                } else {
                    path
                };
                errs.push(FieldError {
                    path,
                    message: "expected a record (JSON object)".into(),
                });
                None
            }
        }
    }

    fn child_path(&self, key: &str) -> String {
        // A key that is not a plain name (empty, or with a dot, bracket or
        // space) is quoted, so every path names its field unambiguously.
        let plain = !key.is_empty()
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        let key = if plain {
            key.to_string()
        } else {
            format!("{key:?}")
        };
        if self.path.is_empty() {
            key
        } else {
            format!("{}.{}", self.path, key)
        }
    }

    /// Records an error against field `key` of this record.
    pub fn error(&mut self, key: &str, message: impl Into<String>) {
        let path = self.child_path(key);
        self.errs.push(FieldError {
            path,
            message: message.into(),
        });
    }

    /// Whether field `key` is given (and not `null`); call before reading it.
    pub fn present(&self, key: &str) -> bool {
        !matches!(self.input.get(key), None | Some(Value::Null))
    }

    /// The string value of field `key`, without reading it (for checks that
    /// span records, such as unique names, which must see invalid records too).
    pub fn peek_str(&self, key: &str) -> Option<String> {
        self.input
            .get(key)
            .and_then(Value::as_str)
            .map(str::to_string)
    }

    /// Reads field `key`: its value, else `default`, checked by `check`.
    /// Absent with no default yields `None` (and `null` in the output), or an
    /// error when `required`.
    pub fn field<T>(
        &mut self,
        key: &str,
        required: bool,
        default: Option<Value>,
        check: impl FnOnce(&Value) -> Check<T>,
    ) -> Option<T> {
        let value = match self.input.remove(key) {
            Some(Value::Null) | None => default,
            Some(v) => Some(v),
        };
        let Some(value) = value else {
            if required {
                self.error(key, "required field missing");
            }
            self.out.insert(key.to_string(), Value::Null);
            return None;
        };
        let checked = check(&value);
        self.out.insert(key.to_string(), value);
        match checked {
            Ok(v) => Some(v),
            Err(message) => {
                self.error(key, message);
                None
            }
        }
    }

    /// A required field with no default.
    pub fn required<T>(&mut self, key: &str, check: impl FnOnce(&Value) -> Check<T>) -> Option<T> {
        self.field(key, true, None, check)
    }

    /// An optional field with no default: `None` when absent.
    pub fn optional<T>(&mut self, key: &str, check: impl FnOnce(&Value) -> Check<T>) -> Option<T> {
        self.field(key, false, None, check)
    }

    /// A field with a default; falls back to `fallback` only when the value is invalid
    /// (an error is recorded then, so the fallback never reaches a compiled config).
    pub fn with_default<T>(
        &mut self,
        key: &str,
        default: Value,
        fallback: T,
        check: impl FnOnce(&Value) -> Check<T>,
    ) -> T {
        self.field(key, false, Some(default), check)
            .unwrap_or(fallback)
    }

    /// A nested record. An absent record is read as `{}` so its defaults fill in,
    /// unless `required`, which makes absence an error.
    pub fn record<T>(
        &mut self,
        key: &str,
        required: bool,
        build: impl FnOnce(&mut Fields<'_>) -> T,
    ) -> Option<T> {
        let value = match self.input.remove(key) {
            Some(Value::Null) | None if required => {
                self.error(key, "required field missing");
                self.out.insert(key.to_string(), Value::Null);
                return None;
            }
            Some(Value::Null) | None => Value::Object(Map::new()),
            Some(v) => v,
        };
        let path = self.child_path(key);
        let Some(mut child) = Fields::new(path, value.clone(), self.errs) else {
            self.out.insert(key.to_string(), value);
            return None;
        };
        let built = build(&mut child);
        let out = child.finish();
        self.out.insert(key.to_string(), Value::Object(out));
        Some(built)
    }

    /// An array of records (default `[]`); each element is built by `build`.
    pub fn records<T>(&mut self, key: &str, mut build: impl FnMut(&mut Fields<'_>) -> T) -> Vec<T> {
        let items = match self.input.remove(key) {
            Some(Value::Null) | None => Vec::new(),
            Some(Value::Array(items)) => items,
            Some(Value::Object(m)) if m.is_empty() => Vec::new(),
            Some(other) => {
                self.error(key, "expected an array");
                self.out.insert(key.to_string(), other);
                return Vec::new();
            }
        };
        let mut built = Vec::with_capacity(items.len());
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.into_iter().enumerate() {
            let path = format!("{}[{}]", self.child_path(key), i + 1);
            match Fields::new(path, item.clone(), self.errs) {
                Some(mut child) => {
                    built.push(build(&mut child));
                    out.push(Value::Object(child.finish()));
                }
                None => out.push(item),
            }
        }
        self.out.insert(key.to_string(), Value::Array(out));
        built
    }

    /// Ends the record: any field not read is unknown, which is an error (as in
    /// Kong, so a typo never silently falls back to a default). Returns the
    /// normalized record.
    pub fn finish(mut self) -> Map<String, Value> {
        let unknown: Vec<String> = self.input.keys().cloned().collect();
        for key in unknown {
            self.error(&key, "unknown field");
        }
        self.out
    }
}

// ---- value checks: each returns the typed value or a short message ----

/// A JSON string.
pub fn string(v: &Value) -> Check<String> {
    v.as_str()
        .map(str::to_string)
        .ok_or_else(|| "expected a string".to_string())
}

/// A non-empty JSON string.
pub fn nonempty_string(v: &Value) -> Check<String> {
    let s = string(v)?;
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    Ok(s)
}

/// A JSON boolean.
pub fn boolean(v: &Value) -> Check<bool> {
    v.as_bool().ok_or_else(|| "expected a boolean".to_string())
}

/// A number in `min..=max` (fractions allowed).
pub fn number(min: f64, max: f64) -> impl Fn(&Value) -> Check<f64> {
    move |v| {
        let n = v.as_f64().ok_or_else(|| "expected a number".to_string())?;
        if !(min..=max).contains(&n) {
            return Err(format!("value should be between {min} and {max}"));
        }
        Ok(n)
    }
}

/// An integer in `min..=max`. Lua numbers are doubles, so `5.0` is accepted.
pub fn integer(min: i64, max: i64) -> impl Fn(&Value) -> Check<i64> {
    move |v| {
        let n = match v.as_i64() {
            Some(n) => n,
            None => match v.as_f64() {
                Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => f as i64,
                Some(_) => return Err("expected an integer".into()),
                None => return Err("expected an integer".into()),
            },
        };
        if !(min..=max).contains(&n) {
            return Err(format!("value should be between {min} and {max}"));
        }
        Ok(n)
    }
}

/// One of a fixed set of strings.
pub fn one_of(allowed: &'static [&'static str]) -> impl Fn(&Value) -> Check<String> {
    move |v| {
        let s = string(v)?;
        if allowed.contains(&s.as_str()) {
            Ok(s)
        } else {
            Err(format!("expected one of: {}", allowed.join(", ")))
        }
    }
}

/// An array whose elements each pass `each`. An empty object counts as an
/// empty array: that is how an empty Lua table arrives.
pub fn array_of<T>(each: impl Fn(&Value) -> Check<T>) -> impl Fn(&Value) -> Check<Vec<T>> {
    move |v| {
        let items: &[Value] = match v {
            Value::Array(a) => a,
            Value::Object(m) if m.is_empty() => &[],
            _ => return Err("expected an array".into()),
        };
        items
            .iter()
            .enumerate()
            .map(|(i, item)| each(item).map_err(|e| format!("item {}: {}", i + 1, e)))
            .collect()
    }
}

/// `value` as a JSON array of strings, for defaults.
pub fn strings(items: &[&str]) -> Value {
    Value::Array(items.iter().map(|s| Value::String(s.to_string())).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reports_every_error_with_its_path() {
        let mut errs = Vec::new();
        let mut f = Fields::new(String::new(), json!({"a": 1, "b": "x", "zz": 0}), &mut errs)
            .expect("object");
        let _ = f.required("a", string);
        let _ = f.required("b", integer(0, 10));
        let _ = f.required("c", string);
        let _ = f.finish();
        let got: Vec<String> = errs.iter().map(ToString::to_string).collect();
        assert_eq!(
            got,
            vec![
                "a: expected a string",
                "b: expected an integer",
                "c: required field missing",
                "zz: unknown field"
            ]
        );
    }

    #[test]
    fn nested_paths_are_dotted_and_one_based() {
        let mut errs = Vec::new();
        let mut f = Fields::new(
            String::new(),
            json!({"r": [{"x": 1}, {"x": "no"}]}),
            &mut errs,
        )
        .expect("object");
        let _ = f.records("r", |r| r.required("x", integer(0, 5)));
        let _ = f.finish();
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].to_string(), "r[2].x: expected an integer");
    }

    #[test]
    fn odd_keys_are_quoted_so_every_path_names_its_field() {
        // Found by fuzzing (config_value): an unknown empty key was reported
        // with an empty path, as ": unknown field".
        let mut errs = Vec::new();
        let input = json!({"": 1, "a.b": 2, "r": {"x y": 3, "ok_key-2": 4}});
        let mut f = Fields::new(String::new(), input, &mut errs).expect("object");
        let _ = f.record("r", false, |r| r.required("ok_key-2", integer(0, 1)));
        let _ = f.finish();
        let got: Vec<String> = errs.iter().map(ToString::to_string).collect();
        assert_eq!(
            got,
            vec![
                "r.ok_key-2: value should be between 0 and 1",
                r#"r."x y": unknown field"#,
                r#""": unknown field"#,
                r#""a.b": unknown field"#,
            ]
        );
    }

    #[test]
    fn defaults_fill_normalized_output() {
        let mut errs = Vec::new();
        let mut f = Fields::new(String::new(), json!({"x": null}), &mut errs).expect("object");
        let x = f.with_default("x", json!(7), 0, integer(0, 10));
        let y = f.optional("y", string);
        let out = f.finish();
        assert_eq!(x, 7);
        assert_eq!(y, None);
        assert_eq!(Value::Object(out), json!({"x": 7, "y": null}));
        assert!(errs.is_empty());
    }

    #[test]
    fn lua_doubles_are_integers_and_empty_objects_are_arrays() {
        assert_eq!(integer(0, 10)(&json!(5.0)), Ok(5));
        assert!(integer(0, 10)(&json!(5.5)).is_err());
        assert_eq!(array_of(string)(&json!({})), Ok(vec![]));
    }
}
