//! Filtered search: indexed payload fields and the filter expressions over them.
//!
//! A collection declares its indexed fields at create time ([`IndexedField`] in
//! `CollectionOptions::indexed_fields`). Payloads are JSON objects; an indexed field's value must
//! have the field's kind ([`FieldKind`]) or be absent (a missing key, `null`, or a payload that is
//! not a JSON object): a document whose payload gives an indexed field a value of another kind is
//! refused at insert ([`check_payload`]).
//!
//! A [`Filter`] is parsed from JSON ([`Filter::from_json`]) and checked against the declared fields
//! ([`Filter::bind`]) before it is used:
//!
//! ```json
//! {"and": [{"field": "lang", "eq": "en"}, {"field": "year", "gte": 2020}]}
//! ```
//!
//! - `{"field": F, "eq": V}`: keyword, integer or bool fields; a keyword array matches when any
//!   element equals `V`.
//! - `{"field": F, "in": [V, ...]}`: keyword or integer fields, any of the values.
//! - `{"field": F, "gt" | "gte" | "lt" | "lte": N, ...}`: integer or float fields, every bound given.
//! - `{"and": [...]}`, `{"or": [...]}` (non-empty), `{"not": FILTER}`.
//! - `{"ids": [ID, ...]}`: an allow-list of document ids.
//!
//! A document without the field matches no `eq`, `in` or range on it (so it matches their `not`).
//! Per segment, a filter is evaluated on the segment's field index ([`column`]) into the set of
//! ordinals that pass; documents in the memtable are evaluated on their payloads, with the same
//! semantics ([`BoundFilter::matches_payload`]).

pub mod column;

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};

/// Most indexed fields a collection may declare.
pub const MAX_INDEXED_FIELDS: usize = 64;
/// Longest indexed field name, in bytes.
pub const MAX_FIELD_NAME_BYTES: usize = 256;
/// Most nodes (predicates and connectives) in one filter expression.
pub const MAX_FILTER_NODES: usize = 4096;
/// Deepest nesting of a filter expression.
pub const MAX_FILTER_DEPTH: usize = 32;
/// Most ids in one `ids` allow-list.
pub const MAX_FILTER_IDS: usize = 1_000_000;

/// The value type of an indexed field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FieldKind {
    /// A string, or an array of strings (membership).
    Keyword,
    /// A JSON integer within i64.
    Integer,
    /// Any JSON number, as f64.
    Float,
    /// `true` or `false`.
    Bool,
}

impl FieldKind {
    /// The lowercase name used in options, the CLI and messages.
    pub fn name(self) -> &'static str {
        match self {
            FieldKind::Keyword => "keyword",
            FieldKind::Integer => "integer",
            FieldKind::Float => "float",
            FieldKind::Bool => "bool",
        }
    }

    /// The kind named `name` (`keyword`, `integer`, `float`, `bool`).
    pub fn parse(name: &str) -> Result<FieldKind> {
        match name {
            "keyword" => Ok(FieldKind::Keyword),
            "integer" => Ok(FieldKind::Integer),
            "float" => Ok(FieldKind::Float),
            "bool" => Ok(FieldKind::Bool),
            other => Err(Error::InvalidInput(format!(
                "unknown field kind '{other}' (expected keyword, integer, float or bool)"
            ))),
        }
    }

    pub(crate) fn code(self) -> u8 {
        match self {
            FieldKind::Keyword => 1,
            FieldKind::Integer => 2,
            FieldKind::Float => 3,
            FieldKind::Bool => 4,
        }
    }

    pub(crate) fn from_code(code: u8) -> Option<FieldKind> {
        [FieldKind::Keyword, FieldKind::Integer, FieldKind::Float, FieldKind::Bool]
            .into_iter()
            .find(|k| k.code() == code)
    }
}

/// A payload field the collection indexes for filtered search.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct IndexedField {
    /// The top-level key of the JSON payload.
    pub name: String,
    /// Its value type.
    pub kind: FieldKind,
}

impl IndexedField {
    /// A field named `name` of `kind`.
    pub fn new(name: impl Into<String>, kind: FieldKind) -> Self {
        IndexedField { name: name.into(), kind }
    }

    /// `name:kind`, as the CLI takes it (`lang:keyword`).
    pub fn parse(spec: &str) -> Result<Self> {
        let (name, kind) = spec
            .rsplit_once(':')
            .ok_or_else(|| Error::InvalidInput(format!("indexed field '{spec}' is not NAME:KIND")))?;
        Ok(IndexedField::new(name, FieldKind::parse(kind)?))
    }
}

/// Checks a collection's declared fields: at most [`MAX_INDEXED_FIELDS`], names non-empty, at most
/// [`MAX_FIELD_NAME_BYTES`], distinct.
pub fn validate_fields(fields: &[IndexedField]) -> Result<()> {
    if fields.len() > MAX_INDEXED_FIELDS {
        return Err(Error::invalid_param(
            "indexed_fields",
            format!("{} fields; at most {MAX_INDEXED_FIELDS}", fields.len()),
        ));
    }
    let mut seen = HashSet::new();
    for f in fields {
        if f.name.is_empty() || f.name.len() > MAX_FIELD_NAME_BYTES {
            return Err(Error::invalid_param(
                "indexed_fields",
                format!("a field name must have 1 to {MAX_FIELD_NAME_BYTES} bytes, '{}' has {}", f.name, f.name.len()),
            ));
        }
        if !seen.insert(f.name.as_str()) {
            return Err(Error::invalid_param("indexed_fields", format!("field '{}' is declared twice", f.name)));
        }
    }
    Ok(())
}

/// One indexed field's value in one payload.
#[derive(Clone, Debug, PartialEq)]
pub enum FieldValue {
    /// A keyword field's strings (one, or an array's elements).
    Keywords(Vec<String>),
    /// An integer field's value.
    Integer(i64),
    /// A float field's value.
    Float(f64),
    /// A bool field's value.
    Bool(bool),
}

/// The payload as a JSON object, or `None` when it is not one (bytes, other JSON): every field
/// is then absent.
pub(crate) fn payload_object(payload: &[u8]) -> Option<serde_json::Map<String, Value>> {
    // Cheap test first: most non-JSON payloads do not start with '{'.
    let first = payload.iter().find(|b| !b.is_ascii_whitespace())?;
    if *first != b'{' {
        return None;
    }
    match serde_json::from_slice::<Value>(payload) {
        Ok(Value::Object(map)) => Some(map),
        _ => None,
    }
}

/// The value of field `name` of `kind` in `object`, `Ok(None)` when absent or null, an error
/// naming the field when the value has another kind.
pub(crate) fn field_value(
    object: &serde_json::Map<String, Value>,
    name: &str,
    kind: FieldKind,
) -> Result<Option<FieldValue>> {
    let Some(v) = object.get(name) else { return Ok(None) };
    if v.is_null() {
        return Ok(None);
    }
    let wrong = |what: &str| {
        Error::InvalidInput(format!("payload field '{name}' is indexed as {}, but its value is {what}", kind.name()))
    };
    Ok(Some(match kind {
        FieldKind::Keyword => match v {
            Value::String(s) => FieldValue::Keywords(vec![s.clone()]),
            Value::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for item in items {
                    match item {
                        Value::String(s) => out.push(s.clone()),
                        _ => return Err(wrong("an array with a non-string element")),
                    }
                }
                FieldValue::Keywords(out)
            }
            _ => return Err(wrong(json_kind(v))),
        },
        FieldKind::Integer => match v.as_i64() {
            Some(i) => FieldValue::Integer(i),
            None => return Err(wrong(if v.is_number() { "not an integer within i64" } else { json_kind(v) })),
        },
        FieldKind::Float => match v.as_f64() {
            Some(x) if v.is_number() => FieldValue::Float(x),
            _ => return Err(wrong(json_kind(v))),
        },
        FieldKind::Bool => match v {
            Value::Bool(b) => FieldValue::Bool(*b),
            _ => return Err(wrong(json_kind(v))),
        },
    }))
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a bool",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Refuses a payload that gives an indexed field a value of another kind (the insert-time rule).
pub fn check_payload(payload: Option<&[u8]>, fields: &[IndexedField]) -> Result<()> {
    if fields.is_empty() {
        return Ok(());
    }
    let Some(object) = payload.and_then(payload_object) else { return Ok(()) };
    for f in fields {
        field_value(&object, &f.name, f.kind)?;
    }
    Ok(())
}

/// A filter expression as parsed, before it is checked against a collection's fields.
#[derive(Clone, Debug, PartialEq)]
pub enum Filter {
    /// `field` equals `value`.
    Eq {
        /// Field name.
        field: String,
        /// The JSON value compared with.
        value: Value,
    },
    /// `field` equals one of `values`.
    In {
        /// Field name.
        field: String,
        /// The JSON values compared with.
        values: Vec<Value>,
    },
    /// `field` lies within the bounds.
    Range {
        /// Field name.
        field: String,
        /// `gt`, `gte`, `lt`, `lte` (each optional, at least one).
        bounds: RangeBounds,
    },
    /// Every part matches.
    And(Vec<Filter>),
    /// Some part matches.
    Or(Vec<Filter>),
    /// The part does not match.
    Not(Box<Filter>),
    /// The document's id is listed.
    Ids(Vec<u64>),
}

/// The bounds of a range predicate, as JSON numbers.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RangeBounds {
    /// Exclusive lower bound.
    pub gt: Option<serde_json::Number>,
    /// Inclusive lower bound.
    pub gte: Option<serde_json::Number>,
    /// Exclusive upper bound.
    pub lt: Option<serde_json::Number>,
    /// Inclusive upper bound.
    pub lte: Option<serde_json::Number>,
}

impl Filter {
    /// Parses the JSON form (module docs). Errors are [`Error::InvalidInput`] naming the position
    /// (`filter.and[1]`) and what is wrong there.
    pub fn from_json(text: &str) -> Result<Filter> {
        let value: Value =
            serde_json::from_str(text).map_err(|e| Error::InvalidInput(format!("filter: not JSON ({e})")))?;
        Filter::from_value(&value)
    }

    /// Parses an already decoded JSON value (see [`Filter::from_json`]).
    pub fn from_value(value: &Value) -> Result<Filter> {
        let mut nodes = 0;
        parse(value, "filter", 0, &mut nodes)
    }

    /// Checks the filter against the collection's fields and resolves every predicate to the
    /// field's kind. Unknown fields, and values or operators the field's kind does not take, are
    /// [`Error::InvalidInput`] naming the field.
    pub fn bind(&self, fields: &[IndexedField]) -> Result<BoundFilter> {
        bind(self, fields, "filter")
    }
}

fn bad(at: &str, what: impl std::fmt::Display) -> Error {
    Error::InvalidInput(format!("{at}: {what}"))
}

fn parse(value: &Value, at: &str, depth: usize, nodes: &mut usize) -> Result<Filter> {
    *nodes += 1;
    if *nodes > MAX_FILTER_NODES {
        return Err(bad(at, format!("the filter has more than {MAX_FILTER_NODES} parts")));
    }
    if depth > MAX_FILTER_DEPTH {
        return Err(bad(at, format!("the filter nests deeper than {MAX_FILTER_DEPTH}")));
    }
    let Value::Object(map) = value else {
        return Err(bad(at, format!("expected an object, found {}", json_kind(value))));
    };
    let mut list = |key: &str| -> Result<Vec<Filter>> {
        let Some(Value::Array(items)) = map.get(key) else {
            return Err(bad(at, format!("'{key}' takes an array of filters")));
        };
        if items.is_empty() {
            return Err(bad(at, format!("'{key}' needs at least one filter")));
        }
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            out.push(parse(item, &format!("{at}.{key}[{i}]"), depth + 1, nodes)?);
        }
        Ok(out)
    };
    let only = |key: &str| -> Result<()> {
        match map.keys().find(|k| k.as_str() != key) {
            Some(other) => Err(bad(at, format!("'{other}' cannot appear beside '{key}'"))),
            None => Ok(()),
        }
    };
    if map.contains_key("and") {
        only("and")?;
        return Ok(Filter::And(list("and")?));
    }
    if map.contains_key("or") {
        only("or")?;
        return Ok(Filter::Or(list("or")?));
    }
    if let Some(inner) = map.get("not") {
        only("not")?;
        return Ok(Filter::Not(Box::new(parse(inner, &format!("{at}.not"), depth + 1, nodes)?)));
    }
    if let Some(ids) = map.get("ids") {
        only("ids")?;
        let Value::Array(items) = ids else { return Err(bad(at, "'ids' takes an array of ids")) };
        if items.len() > MAX_FILTER_IDS {
            return Err(bad(at, format!("'ids' lists {} ids; at most {MAX_FILTER_IDS}", items.len())));
        }
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            match item.as_u64() {
                Some(id) => out.push(id),
                None => return Err(bad(&format!("{at}.ids[{i}]"), "an id is a non-negative integer")),
            }
        }
        return Ok(Filter::Ids(out));
    }
    let Some(field) = map.get("field") else {
        return Err(bad(at, "expected 'field', 'and', 'or', 'not' or 'ids'"));
    };
    let Value::String(field) = field else { return Err(bad(at, "'field' takes a string")) };
    let field = field.clone();
    let mut bounds = RangeBounds::default();
    let mut op: Option<&str> = None;
    for (key, v) in map {
        let slot = match key.as_str() {
            "field" => continue,
            "eq" | "in" => {
                if op.is_some() || map.len() != 2 {
                    return Err(bad(at, format!("'{key}' takes no other operator beside it")));
                }
                op = Some(if key == "eq" { "eq" } else { "in" });
                continue;
            }
            "gt" => &mut bounds.gt,
            "gte" => &mut bounds.gte,
            "lt" => &mut bounds.lt,
            "lte" => &mut bounds.lte,
            other => return Err(bad(at, format!("unknown operator '{other}'"))),
        };
        match v {
            Value::Number(n) => *slot = Some(n.clone()),
            _ => return Err(bad(at, format!("'{key}' takes a number, found {}", json_kind(v)))),
        }
        op = Some("range");
    }
    match op {
        Some("eq") => Ok(Filter::Eq { field, value: map["eq"].clone() }),
        Some("in") => match &map["in"] {
            Value::Array(values) if !values.is_empty() => Ok(Filter::In { field, values: values.clone() }),
            _ => Err(bad(at, "'in' takes a non-empty array of values")),
        },
        Some(_) => Ok(Filter::Range { field, bounds }),
        None => Err(bad(at, "a field predicate needs 'eq', 'in', 'gt', 'gte', 'lt' or 'lte'")),
    }
}

/// A filter checked against a collection's fields: every predicate in the field's own terms.
#[derive(Clone, Debug, PartialEq)]
pub enum BoundFilter {
    /// A keyword field holds one of these strings.
    Keywords {
        /// Field name.
        field: String,
        /// Accepted values, sorted and distinct.
        values: Vec<String>,
    },
    /// An integer field lies in `lo..=hi` (several ranges: any of them; `in` on integers).
    Integers {
        /// Field name.
        field: String,
        /// Inclusive ranges, sorted, disjoint.
        ranges: Vec<(i64, i64)>,
    },
    /// A float field lies within the bounds.
    Floats {
        /// Field name.
        field: String,
        /// Lower bound and whether it is inclusive.
        lower: Option<(f64, bool)>,
        /// Upper bound and whether it is inclusive.
        upper: Option<(f64, bool)>,
    },
    /// A bool field equals the value.
    Bool {
        /// Field name.
        field: String,
        /// The value matched.
        value: bool,
    },
    /// Every part matches.
    And(Vec<BoundFilter>),
    /// Some part matches.
    Or(Vec<BoundFilter>),
    /// The part does not match.
    Not(Box<BoundFilter>),
    /// The document's id is in the set.
    Ids(HashSet<u64>),
    /// Matches nothing (an empty range, e.g. `gt 5, lt 3`).
    Nothing,
}

fn bind(filter: &Filter, fields: &[IndexedField], at: &str) -> Result<BoundFilter> {
    let field_of = |name: &str| -> Result<&IndexedField> {
        fields.iter().find(|f| f.name == name).ok_or_else(|| {
            let known: Vec<&str> = fields.iter().map(|f| f.name.as_str()).collect();
            bad(
                at,
                format!(
                    "field '{name}' is not indexed (indexed: {})",
                    if known.is_empty() { "none".to_string() } else { known.join(", ") }
                ),
            )
        })
    };
    let mismatch = |f: &IndexedField, what: &str| bad(at, format!("field '{}' is {}: {what}", f.name, f.kind.name()));
    Ok(match filter {
        Filter::And(parts) => BoundFilter::And(
            parts.iter().enumerate().map(|(i, p)| bind(p, fields, &format!("{at}.and[{i}]"))).collect::<Result<_>>()?,
        ),
        Filter::Or(parts) => BoundFilter::Or(
            parts.iter().enumerate().map(|(i, p)| bind(p, fields, &format!("{at}.or[{i}]"))).collect::<Result<_>>()?,
        ),
        Filter::Not(inner) => BoundFilter::Not(Box::new(bind(inner, fields, &format!("{at}.not"))?)),
        Filter::Ids(ids) => BoundFilter::Ids(ids.iter().copied().collect()),
        Filter::Eq { field, value } => {
            let f = field_of(field)?;
            bind_values(f, std::slice::from_ref(value), "eq", &mismatch)?
        }
        Filter::In { field, values } => {
            let f = field_of(field)?;
            if f.kind == FieldKind::Float || f.kind == FieldKind::Bool {
                return Err(mismatch(f, "'in' applies to keyword and integer fields"));
            }
            bind_values(f, values, "in", &mismatch)?
        }
        Filter::Range { field, bounds } => {
            let f = field_of(field)?;
            match f.kind {
                FieldKind::Integer => integer_range(f.name.clone(), bounds),
                FieldKind::Float => float_range(f.name.clone(), bounds),
                _ => return Err(mismatch(f, "ranges apply to integer and float fields")),
            }
        }
    })
}

fn bind_values(
    f: &IndexedField,
    values: &[Value],
    op: &str,
    mismatch: &dyn Fn(&IndexedField, &str) -> Error,
) -> Result<BoundFilter> {
    Ok(match f.kind {
        FieldKind::Keyword => {
            let mut out = Vec::with_capacity(values.len());
            for v in values {
                match v {
                    Value::String(s) => out.push(s.clone()),
                    _ => return Err(mismatch(f, &format!("'{op}' needs strings, found {}", json_kind(v)))),
                }
            }
            out.sort();
            out.dedup();
            BoundFilter::Keywords { field: f.name.clone(), values: out }
        }
        FieldKind::Integer => {
            let mut points = Vec::with_capacity(values.len());
            for v in values {
                match v.as_i64() {
                    Some(i) => points.push(i),
                    None => return Err(mismatch(f, &format!("'{op}' needs integers within i64, found {v}"))),
                }
            }
            points.sort_unstable();
            points.dedup();
            BoundFilter::Integers { field: f.name.clone(), ranges: points.into_iter().map(|p| (p, p)).collect() }
        }
        FieldKind::Float => match values.first().and_then(|v| v.as_f64()) {
            Some(x) if values[0].is_number() => {
                BoundFilter::Floats { field: f.name.clone(), lower: Some((x, true)), upper: Some((x, true)) }
            }
            _ => return Err(mismatch(f, &format!("'{op}' needs a number"))),
        },
        FieldKind::Bool => match values.first() {
            Some(Value::Bool(b)) => BoundFilter::Bool { field: f.name.clone(), value: *b },
            _ => return Err(mismatch(f, &format!("'{op}' needs true or false"))),
        },
    })
}

/// An integer range from JSON bounds: a fractional bound is rounded inwards (`gte 2.5` is
/// `gte 3`), bounds beyond i64 clamp, and an empty range matches nothing.
fn integer_range(field: String, b: &RangeBounds) -> BoundFilter {
    let mut lo = i64::MIN as i128;
    let mut hi = i64::MAX as i128;
    let as_lower = |n: &serde_json::Number, strict: bool| -> i128 {
        if let Some(i) = n.as_i64() {
            i as i128 + strict as i128
        } else if let Some(u) = n.as_u64() {
            u as i128 + strict as i128
        } else {
            let x = n.as_f64().unwrap_or(f64::INFINITY);
            // The least integer above (strict) or at least x.
            let c = x.ceil();
            let c = if strict && c == x { c + 1.0 } else { c };
            c.clamp(i64::MIN as f64 * 2.0, i64::MAX as f64 * 2.0) as i128
        }
    };
    let as_upper = |n: &serde_json::Number, strict: bool| -> i128 {
        if let Some(i) = n.as_i64() {
            i as i128 - strict as i128
        } else if let Some(u) = n.as_u64() {
            u as i128 - strict as i128
        } else {
            let x = n.as_f64().unwrap_or(f64::NEG_INFINITY);
            let f = x.floor();
            let f = if strict && f == x { f - 1.0 } else { f };
            f.clamp(i64::MIN as f64 * 2.0, i64::MAX as f64 * 2.0) as i128
        }
    };
    if let Some(n) = &b.gt {
        lo = lo.max(as_lower(n, true));
    }
    if let Some(n) = &b.gte {
        lo = lo.max(as_lower(n, false));
    }
    if let Some(n) = &b.lt {
        hi = hi.min(as_upper(n, true));
    }
    if let Some(n) = &b.lte {
        hi = hi.min(as_upper(n, false));
    }
    let (lo, hi) = (lo.max(i64::MIN as i128), hi.min(i64::MAX as i128));
    if lo > hi {
        return BoundFilter::Nothing;
    }
    BoundFilter::Integers { field, ranges: vec![(lo as i64, hi as i64)] }
}

fn float_range(field: String, b: &RangeBounds) -> BoundFilter {
    let num = |n: &serde_json::Number| n.as_f64().unwrap_or(0.0);
    let mut lower: Option<(f64, bool)> = None;
    let mut upper: Option<(f64, bool)> = None;
    let tighter_lower = |cur: Option<(f64, bool)>, x: f64, inclusive: bool| match cur {
        Some((c, ci)) if c > x || (c == x && !ci) => Some((c, ci)),
        _ => Some((x, inclusive)),
    };
    let tighter_upper = |cur: Option<(f64, bool)>, x: f64, inclusive: bool| match cur {
        Some((c, ci)) if c < x || (c == x && !ci) => Some((c, ci)),
        _ => Some((x, inclusive)),
    };
    if let Some(n) = &b.gt {
        lower = tighter_lower(lower, num(n), false);
    }
    if let Some(n) = &b.gte {
        lower = tighter_lower(lower, num(n), true);
    }
    if let Some(n) = &b.lt {
        upper = tighter_upper(upper, num(n), false);
    }
    if let Some(n) = &b.lte {
        upper = tighter_upper(upper, num(n), true);
    }
    if let (Some((l, li)), Some((u, ui))) = (lower, upper) {
        if l > u || (l == u && !(li && ui)) {
            return BoundFilter::Nothing;
        }
    }
    BoundFilter::Floats { field, lower, upper }
}

/// Whether `x` lies within float bounds.
pub(crate) fn float_in(x: f64, lower: Option<(f64, bool)>, upper: Option<(f64, bool)>) -> bool {
    lower.is_none_or(|(l, inc)| if inc { x >= l } else { x > l })
        && upper.is_none_or(|(u, inc)| if inc { x <= u } else { x < u })
}

impl BoundFilter {
    /// Whether the filter reads any payload field (an `ids`-only filter does not).
    fn reads_fields(&self) -> bool {
        match self {
            BoundFilter::Keywords { .. }
            | BoundFilter::Integers { .. }
            | BoundFilter::Floats { .. }
            | BoundFilter::Bool { .. } => true,
            BoundFilter::And(p) | BoundFilter::Or(p) => p.iter().any(|f| f.reads_fields()),
            BoundFilter::Not(inner) => inner.reads_fields(),
            BoundFilter::Ids(_) | BoundFilter::Nothing => false,
        }
    }

    /// The filter's verdict on one document from its id and payload: the definition that the
    /// segment field index reproduces. Every predicate knows its field's kind from
    /// [`Filter::bind`]; a value of another kind counts as absent here (insert refuses such
    /// payloads; this only matters for documents written before the field was indexed).
    pub fn matches_payload(&self, id: u64, payload: &[u8]) -> bool {
        let object = if self.reads_fields() { payload_object(payload) } else { None };
        self.matches_object(id, object.as_ref())
    }

    fn matches_object(&self, id: u64, object: Option<&serde_json::Map<String, Value>>) -> bool {
        let value = |name: &str, kind: FieldKind| field_value(object?, name, kind).ok().flatten();
        match self {
            BoundFilter::Keywords { field, values } => match value(field, FieldKind::Keyword) {
                Some(FieldValue::Keywords(have)) => have.iter().any(|h| values.binary_search(h).is_ok()),
                _ => false,
            },
            BoundFilter::Integers { field, ranges } => match value(field, FieldKind::Integer) {
                Some(FieldValue::Integer(i)) => ranges.iter().any(|&(lo, hi)| lo <= i && i <= hi),
                _ => false,
            },
            BoundFilter::Floats { field, lower, upper } => match value(field, FieldKind::Float) {
                Some(FieldValue::Float(x)) => float_in(x, *lower, *upper),
                _ => false,
            },
            BoundFilter::Bool { field, value: want } => {
                matches!(value(field, FieldKind::Bool), Some(FieldValue::Bool(b)) if b == *want)
            }
            BoundFilter::And(parts) => parts.iter().all(|p| p.matches_object(id, object)),
            BoundFilter::Or(parts) => parts.iter().any(|p| p.matches_object(id, object)),
            BoundFilter::Not(inner) => !inner.matches_object(id, object),
            BoundFilter::Ids(ids) => ids.contains(&id),
            BoundFilter::Nothing => false,
        }
    }
}

/// One field of each kind, for the unit tests of this module and [`column`].
#[cfg(test)]
pub(crate) fn test_fields() -> Vec<IndexedField> {
    vec![
        IndexedField::new("lang", FieldKind::Keyword),
        IndexedField::new("year", FieldKind::Integer),
        IndexedField::new("score", FieldKind::Float),
        IndexedField::new("open", FieldKind::Bool),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields() -> Vec<IndexedField> {
        test_fields()
    }

    fn bound(text: &str) -> Result<BoundFilter> {
        Filter::from_json(text)?.bind(&fields())
    }

    fn err(text: &str) -> String {
        bound(text).unwrap_err().to_string()
    }

    #[test]
    fn the_documented_example_parses_and_matches() {
        let f = bound(r#"{"and":[{"field":"lang","eq":"en"},{"field":"year","gte":2020}]}"#).unwrap();
        assert!(f.matches_payload(1, br#"{"lang":"en","year":2021}"#));
        assert!(f.matches_payload(1, br#"{"lang":["de","en"],"year":2020}"#));
        assert!(!f.matches_payload(1, br#"{"lang":"en","year":2019}"#));
        assert!(!f.matches_payload(1, br#"{"lang":"de","year":2021}"#));
        assert!(!f.matches_payload(1, br#"{"year":2021}"#), "absent field matches no eq");
        assert!(!f.matches_payload(1, b"not json"));
    }

    #[test]
    fn operators_mean_what_they_say() {
        let doc = br#"{"lang":"en","year":2020,"score":0.5,"open":true}"#;
        let yes = |t: &str| assert!(bound(t).unwrap().matches_payload(7, doc), "{t}");
        let no = |t: &str| assert!(!bound(t).unwrap().matches_payload(7, doc), "{t}");
        yes(r#"{"field":"year","in":[1999,2020]}"#);
        no(r#"{"field":"year","in":[1999,2021]}"#);
        yes(r#"{"field":"year","gt":2019.5,"lt":2020.5}"#);
        no(r#"{"field":"year","gt":2020}"#);
        yes(r#"{"field":"year","lte":2020}"#);
        no(r#"{"field":"year","gt":5,"lt":3}"#);
        yes(r#"{"field":"score","gte":0.5,"lt":1}"#);
        no(r#"{"field":"score","gt":0.5}"#);
        yes(r#"{"field":"score","eq":0.5}"#);
        yes(r#"{"field":"open","eq":true}"#);
        no(r#"{"field":"open","eq":false}"#);
        yes(r#"{"not":{"field":"lang","eq":"fr"}}"#);
        yes(r#"{"or":[{"field":"lang","eq":"fr"},{"ids":[7]}]}"#);
        no(r#"{"ids":[1,2,3]}"#);
        yes(r#"{"field":"lang","in":["fr","en"]}"#);
        // An absent field passes a `not` of a predicate on it.
        assert!(bound(r#"{"not":{"field":"year","eq":1}}"#).unwrap().matches_payload(1, b"{}"));
    }

    #[test]
    fn errors_name_the_position_and_the_field() {
        assert!(err(r#"{"and":[{"field":"lang","eq":"en"},{"field":"colour","eq":"red"}]}"#)
            .contains("filter.and[1]: field 'colour' is not indexed"));
        assert!(err(r#"{"field":"year","eq":"2020"}"#).contains("field 'year' is integer"));
        assert!(err(r#"{"field":"lang","gte":3}"#).contains("ranges apply to integer and float"));
        assert!(err(r#"{"field":"open","in":[true]}"#).contains("'in' applies"));
        assert!(err(r#"{"or":[]}"#).contains("at least one"));
        assert!(err(r#"{"not":{"field":"year"}}"#).contains("filter.not: a field predicate needs"));
        assert!(err(r#"{"field":"year","eq":1,"gt":0}"#).contains("no other operator"));
        assert!(err(r#"{"field":"year","between":[1,2]}"#).contains("unknown operator 'between'"));
        assert!(err(r#"{"ids":[-1]}"#).contains("filter.ids[0]"));
        assert!(err("[1]").contains("expected an object"));
        assert!(err("{").contains("not JSON"));
        let mut deep = String::new();
        for _ in 0..40 {
            deep.push_str(r#"{"not":"#);
        }
        deep.push_str(r#"{"ids":[1]}"#);
        deep.push_str(&"}".repeat(40));
        assert!(err(&deep).contains("nests deeper"));
    }

    #[test]
    fn payloads_with_a_wrong_kind_are_refused() {
        let fs = fields();
        assert!(check_payload(Some(br#"{"lang":"en","year":2020,"score":1,"open":false}"#), &fs).is_ok());
        assert!(check_payload(Some(br#"{"year":null}"#), &fs).is_ok(), "null is absent");
        assert!(check_payload(Some(b"raw bytes"), &fs).is_ok(), "not an object: no fields");
        assert!(check_payload(None, &fs).is_ok());
        for (bad, what) in [
            (r#"{"year":"2020"}"#, "'year' is indexed as integer"),
            (r#"{"year":2020.5}"#, "not an integer"),
            (r#"{"lang":["en",3]}"#, "non-string element"),
            (r#"{"open":1}"#, "'open' is indexed as bool"),
            (r#"{"score":"high"}"#, "'score' is indexed as float"),
        ] {
            let e = check_payload(Some(bad.as_bytes()), &fs).unwrap_err().to_string();
            assert!(e.contains(what), "{bad}: {e}");
        }
    }

    #[test]
    fn field_declarations_are_checked() {
        assert!(validate_fields(&fields()).is_ok());
        let twice = vec![IndexedField::new("a", FieldKind::Bool), IndexedField::new("a", FieldKind::Integer)];
        assert!(validate_fields(&twice).is_err());
        assert!(validate_fields(&[IndexedField::new("", FieldKind::Bool)]).is_err());
        assert_eq!(IndexedField::parse("lang:keyword").unwrap(), IndexedField::new("lang", FieldKind::Keyword));
        assert!(IndexedField::parse("lang").is_err());
        assert!(IndexedField::parse("lang:text").is_err());
    }

    #[test]
    fn integer_bounds_round_inwards() {
        let r = |t: &str| match bound(t).unwrap() {
            BoundFilter::Integers { ranges, .. } => ranges,
            other => panic!("{other:?}"),
        };
        assert_eq!(r(r#"{"field":"year","gte":2.5,"lte":7.5}"#), vec![(3, 7)]);
        assert_eq!(r(r#"{"field":"year","gt":2,"lt":7}"#), vec![(3, 6)]);
        assert_eq!(r(r#"{"field":"year","gt":2.0,"lt":7.0}"#), vec![(3, 6)]);
        assert_eq!(r(r#"{"field":"year","gte":-1e300}"#), vec![(i64::MIN, i64::MAX)]);
        assert_eq!(bound(r#"{"field":"year","gt":1e300}"#).unwrap(), BoundFilter::Nothing);
    }
}
