//! The segment's field index (section `field_index`, storage-format.md): per indexed field, the
//! ordinals of the documents by value, so a filter is evaluated into a bitmap of passing ordinals
//! without reading payloads.
//!
//! - Keyword and bool fields: each distinct value (sorted bytewise; bools as `false`/`true`) with a
//!   roaring bitmap of the ordinals holding it (a keyword array puts its document in several).
//! - Integer and float fields: `(value, ordinal)` pairs sorted by value, then ordinal; a range is
//!   two binary searches.
//!
//! Layout, little-endian: `u32 version (1)`, `u32 field count`, then per field `u32 name length`,
//! the UTF-8 name, `u8 kind` (1 keyword, 2 integer, 3 float, 4 bool), three zero bytes, `u32 entry
//! count`, then the entries: `u32 value length`, value bytes, `u32 bitmap length`, a roaring bitmap
//! in its portable serialization (keyword, bool); or `i64`/`f64` value and `u32 ordinal` (integer,
//! float). [`FieldIndex::decode`] checks every length, order and ordinal, so a damaged section is an
//! error, never a wrong answer.

use roaring::RoaringBitmap;

use super::{field_value, float_in, payload_object, BoundFilter, FieldKind, FieldValue, IndexedField};

/// Version of the section layout this build writes and reads.
pub const FIELD_INDEX_VERSION: u32 = 1;

/// Values of one field's column.
#[derive(Clone, Debug, PartialEq)]
enum Column {
    /// Distinct values, ascending, each with the ordinals holding it.
    Terms(Vec<(Vec<u8>, RoaringBitmap)>),
    /// Integer values and ordinals, ascending by value then ordinal.
    Integers(Sorted<i64>),
    /// Float values and ordinals, ascending by value then ordinal.
    Floats(Sorted<f64>),
}

/// `(value, ordinal)` pairs kept as two arrays (12 bytes a pair, not a padded 16).
#[derive(Clone, Debug, PartialEq)]
struct Sorted<T> {
    values: Vec<T>,
    ords: Vec<u32>,
}

impl<T: Copy> Sorted<T> {
    fn from_pairs(pairs: Vec<(T, u32)>) -> Self {
        let (values, ords) = pairs.into_iter().unzip();
        Sorted { values, ords }
    }

    fn len(&self) -> usize {
        self.values.len()
    }

    fn pairs(&self) -> impl Iterator<Item = (T, u32)> + '_ {
        self.values.iter().copied().zip(self.ords.iter().copied())
    }
}

/// One field's column.
#[derive(Clone, Debug, PartialEq)]
struct FieldColumn {
    name: String,
    kind: FieldKind,
    column: Column,
}

/// A segment's field index: the columns of the fields the collection indexed when the segment was
/// written.
#[derive(Clone, Debug, PartialEq)]
pub struct FieldIndex {
    doc_count: u32,
    fields: Vec<FieldColumn>,
}

fn bool_term(b: bool) -> &'static [u8] {
    if b {
        b"true"
    } else {
        b"false"
    }
}

impl FieldIndex {
    /// Builds the columns of `fields` from the payloads of ordinals `0..`. A payload that is not a
    /// JSON object, or whose value for a field is missing or of another kind, gives that field no
    /// value for the document (insert refuses the latter).
    pub fn build<'a>(fields: &[IndexedField], payloads: impl Iterator<Item = &'a [u8]>) -> FieldIndex {
        let mut terms: Vec<std::collections::BTreeMap<Vec<u8>, RoaringBitmap>> = vec![Default::default(); fields.len()];
        let mut ints: Vec<Vec<(i64, u32)>> = vec![Vec::new(); fields.len()];
        let mut floats: Vec<Vec<(f64, u32)>> = vec![Vec::new(); fields.len()];
        let mut doc_count = 0u32;
        for (ord, payload) in payloads.enumerate() {
            let ord = ord as u32;
            doc_count = ord + 1;
            let Some(object) = payload_object(payload) else { continue };
            for (i, f) in fields.iter().enumerate() {
                match field_value(&object, &f.name, f.kind) {
                    Ok(Some(FieldValue::Keywords(values))) => {
                        for v in values {
                            terms[i].entry(v.into_bytes()).or_default().insert(ord);
                        }
                    }
                    Ok(Some(FieldValue::Bool(b))) => {
                        terms[i].entry(bool_term(b).to_vec()).or_default().insert(ord);
                    }
                    Ok(Some(FieldValue::Integer(v))) => ints[i].push((v, ord)),
                    Ok(Some(FieldValue::Float(v))) => floats[i].push((v, ord)),
                    Ok(None) | Err(_) => {}
                }
            }
        }
        let fields = fields
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let column = match f.kind {
                    FieldKind::Keyword | FieldKind::Bool => {
                        Column::Terms(std::mem::take(&mut terms[i]).into_iter().collect())
                    }
                    FieldKind::Integer => {
                        let mut v = std::mem::take(&mut ints[i]);
                        v.sort_unstable();
                        Column::Integers(Sorted::from_pairs(v))
                    }
                    FieldKind::Float => {
                        let mut v = std::mem::take(&mut floats[i]);
                        v.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
                        Column::Floats(Sorted::from_pairs(v))
                    }
                };
                FieldColumn { name: f.name.clone(), kind: f.kind, column }
            })
            .collect();
        FieldIndex { doc_count, fields }
    }

    /// Documents the index covers.
    pub fn doc_count(&self) -> u32 {
        self.doc_count
    }

    /// The indexed fields, in section order.
    pub fn fields(&self) -> Vec<IndexedField> {
        self.fields.iter().map(|f| IndexedField::new(f.name.clone(), f.kind)).collect()
    }

    /// Bytes the decoded index holds in memory (values, ordinals, bitmaps), for `stats` and the
    /// benchmark.
    pub fn memory_bytes(&self) -> usize {
        self.field_memory_bytes().iter().map(|(_, b)| b).sum()
    }

    /// [`FieldIndex::memory_bytes`] per field, in section order.
    pub fn field_memory_bytes(&self) -> Vec<(String, usize)> {
        self.fields
            .iter()
            .map(|f| {
                let bytes = match &f.column {
                    Column::Terms(t) => t.iter().map(|(v, b)| v.len() + b.serialized_size() + 48).sum::<usize>(),
                    Column::Integers(v) => v.len() * 12,
                    Column::Floats(v) => v.len() * 12,
                };
                (f.name.clone(), bytes)
            })
            .collect()
    }

    /// The section bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend(FIELD_INDEX_VERSION.to_le_bytes());
        out.extend((self.fields.len() as u32).to_le_bytes());
        for f in &self.fields {
            out.extend((f.name.len() as u32).to_le_bytes());
            out.extend(f.name.as_bytes());
            out.extend([f.kind.code(), 0, 0, 0]);
            match &f.column {
                Column::Terms(terms) => {
                    out.extend((terms.len() as u32).to_le_bytes());
                    for (value, bitmap) in terms {
                        out.extend((value.len() as u32).to_le_bytes());
                        out.extend(value);
                        out.extend((bitmap.serialized_size() as u32).to_le_bytes());
                        // Writing into a Vec cannot fail.
                        let _ = bitmap.serialize_into(&mut out);
                    }
                }
                Column::Integers(v) => {
                    out.extend((v.len() as u32).to_le_bytes());
                    for (x, o) in v.pairs() {
                        out.extend(x.to_le_bytes());
                        out.extend(o.to_le_bytes());
                    }
                }
                Column::Floats(v) => {
                    out.extend((v.len() as u32).to_le_bytes());
                    for (x, o) in v.pairs() {
                        out.extend(x.to_le_bytes());
                        out.extend(o.to_le_bytes());
                    }
                }
            }
        }
        out
    }

    /// Parses and checks a section for a segment of `doc_count` documents: the error says what is
    /// wrong (the reader names the file and section).
    pub fn decode(bytes: &[u8], doc_count: u32) -> std::result::Result<FieldIndex, String> {
        let mut r = Cursor { bytes, at: 0 };
        let version = r.u32()?;
        if version != FIELD_INDEX_VERSION {
            return Err(format!("field index version {version}, this build reads {FIELD_INDEX_VERSION}"));
        }
        let count = r.u32()? as usize;
        if count > super::MAX_INDEXED_FIELDS {
            return Err(format!("{count} fields, at most {}", super::MAX_INDEXED_FIELDS));
        }
        let mut fields: Vec<FieldColumn> = Vec::with_capacity(count);
        for _ in 0..count {
            let name_len = r.u32()? as usize;
            if name_len == 0 || name_len > super::MAX_FIELD_NAME_BYTES {
                return Err(format!("a field name of {name_len} bytes"));
            }
            let name = std::str::from_utf8(r.take(name_len)?).map_err(|_| "a field name is not UTF-8".to_string())?;
            if fields.iter().any(|f| f.name == name) {
                return Err(format!("field '{name}' appears twice"));
            }
            let head = r.take(4)?;
            let kind =
                FieldKind::from_code(head[0]).ok_or_else(|| format!("field '{name}': unknown kind {}", head[0]))?;
            if head[1..] != [0, 0, 0] {
                return Err(format!("field '{name}': reserved bytes are not zero"));
            }
            let entries = r.u32()? as usize;
            let column = match kind {
                FieldKind::Keyword | FieldKind::Bool => {
                    let mut terms: Vec<(Vec<u8>, RoaringBitmap)> = Vec::with_capacity(entries.min(r.left() / 8));
                    for _ in 0..entries {
                        let len = r.u32()? as usize;
                        let value = r.take(len)?.to_vec();
                        if kind == FieldKind::Keyword && std::str::from_utf8(&value).is_err() {
                            return Err(format!("field '{name}': a value is not UTF-8"));
                        }
                        if kind == FieldKind::Bool && value != b"true" && value != b"false" {
                            return Err(format!("field '{name}': a bool value is neither true nor false"));
                        }
                        if terms.last().is_some_and(|(prev, _)| *prev >= value) {
                            return Err(format!("field '{name}': values are not strictly ascending"));
                        }
                        let blen = r.u32()? as usize;
                        let raw = r.take(blen)?;
                        let bitmap = RoaringBitmap::deserialize_from(raw)
                            .map_err(|e| format!("field '{name}': a damaged bitmap ({e})"))?;
                        if bitmap.serialized_size() != blen {
                            return Err(format!("field '{name}': a bitmap's length disagrees with its contents"));
                        }
                        if bitmap.max().is_some_and(|m| m >= doc_count) {
                            return Err(format!(
                                "field '{name}': an ordinal beyond the segment's {doc_count} documents"
                            ));
                        }
                        terms.push((value, bitmap));
                    }
                    Column::Terms(terms)
                }
                FieldKind::Integer | FieldKind::Float => {
                    if entries > doc_count as usize {
                        return Err(format!("field '{name}': {entries} values for {doc_count} documents"));
                    }
                    let raw = r.take(entries.checked_mul(12).ok_or("entry count overflows")?)?;
                    let pairs = raw.chunks_exact(12).map(|c| {
                        let mut v = [0u8; 8];
                        v.copy_from_slice(&c[..8]);
                        let mut o = [0u8; 4];
                        o.copy_from_slice(&c[8..]);
                        (v, u32::from_le_bytes(o))
                    });
                    let mut seen = RoaringBitmap::new();
                    let mut check_ord = |o: u32| -> std::result::Result<(), String> {
                        if o >= doc_count {
                            return Err(format!(
                                "field '{name}': an ordinal beyond the segment's {doc_count} documents"
                            ));
                        }
                        if !seen.insert(o) {
                            return Err(format!("field '{name}': a document has two values"));
                        }
                        Ok(())
                    };
                    if kind == FieldKind::Integer {
                        let mut v: Vec<(i64, u32)> = Vec::with_capacity(entries);
                        for (bits, o) in pairs {
                            check_ord(o)?;
                            let x = i64::from_le_bytes(bits);
                            if v.last().is_some_and(|&p| p > (x, o)) {
                                return Err(format!("field '{name}': values are not sorted"));
                            }
                            v.push((x, o));
                        }
                        Column::Integers(Sorted::from_pairs(v))
                    } else {
                        let mut v: Vec<(f64, u32)> = Vec::with_capacity(entries);
                        for (bits, o) in pairs {
                            check_ord(o)?;
                            let x = f64::from_le_bytes(bits);
                            if !x.is_finite() {
                                return Err(format!("field '{name}': a value is not finite"));
                            }
                            if v.last().is_some_and(|p| p.0.total_cmp(&x).then(p.1.cmp(&o)).is_gt()) {
                                return Err(format!("field '{name}': values are not sorted"));
                            }
                            v.push((x, o));
                        }
                        Column::Floats(Sorted::from_pairs(v))
                    }
                }
            };
            fields.push(FieldColumn { name: name.to_string(), kind, column });
        }
        if r.left() != 0 {
            return Err(format!("{} bytes after the last field", r.left()));
        }
        Ok(FieldIndex { doc_count, fields })
    }

    /// The ordinals of `0..doc_count` that pass `filter`, with `ids` the segment's document ids by
    /// ordinal (for `ids` predicates). `None` when the filter reads a field this index lacks (the
    /// segment was written before the field was declared), or a field whose kind differs: the
    /// caller then evaluates payloads.
    pub fn evaluate(&self, filter: &BoundFilter, ids: &[u64]) -> Option<RoaringBitmap> {
        let column = |name: &str| self.fields.iter().find(|f| f.name == name);
        Some(match filter {
            BoundFilter::Keywords { field, values } => {
                let f = column(field).filter(|f| f.kind == FieldKind::Keyword)?;
                let Column::Terms(terms) = &f.column else { return None };
                let mut out = RoaringBitmap::new();
                for v in values {
                    if let Ok(i) = terms.binary_search_by(|(t, _)| t.as_slice().cmp(v.as_bytes())) {
                        out |= &terms[i].1;
                    }
                }
                out
            }
            BoundFilter::Bool { field, value } => {
                let f = column(field).filter(|f| f.kind == FieldKind::Bool)?;
                let Column::Terms(terms) = &f.column else { return None };
                terms
                    .iter()
                    .find(|(t, _)| t.as_slice() == bool_term(*value))
                    .map(|(_, b)| b.clone())
                    .unwrap_or_default()
            }
            BoundFilter::Integers { field, ranges } => {
                let f = column(field).filter(|f| f.kind == FieldKind::Integer)?;
                let Column::Integers(v) = &f.column else { return None };
                let mut out = RoaringBitmap::new();
                for &(lo, hi) in ranges {
                    let start = v.values.partition_point(|x| *x < lo);
                    let end = v.values.partition_point(|x| *x <= hi);
                    out.extend(v.ords[start..end.max(start)].iter().copied());
                }
                out
            }
            BoundFilter::Floats { field, lower, upper } => {
                let f = column(field).filter(|f| f.kind == FieldKind::Float)?;
                let Column::Floats(v) = &f.column else { return None };
                let x = &v.values;
                let start = match lower {
                    Some((l, true)) => x.partition_point(|p| *p < *l),
                    Some((l, false)) => x.partition_point(|p| *p <= *l),
                    None => 0,
                };
                let end = match upper {
                    Some((u, true)) => x.partition_point(|p| *p <= *u),
                    Some((u, false)) => x.partition_point(|p| *p < *u),
                    None => x.len(),
                };
                let mut out = RoaringBitmap::new();
                out.extend((start..end.max(start)).filter(|&i| float_in(x[i], *lower, *upper)).map(|i| v.ords[i]));
                out
            }
            BoundFilter::And(parts) => {
                let mut it = parts.iter();
                let mut out = self.evaluate(it.next()?, ids)?;
                for p in it {
                    if out.is_empty() {
                        break;
                    }
                    out &= self.evaluate(p, ids)?;
                }
                out
            }
            BoundFilter::Or(parts) => {
                let mut out = RoaringBitmap::new();
                for p in parts {
                    out |= self.evaluate(p, ids)?;
                }
                out
            }
            BoundFilter::Not(inner) => {
                let mut all = RoaringBitmap::new();
                all.insert_range(0..self.doc_count);
                all - self.evaluate(inner, ids)?
            }
            BoundFilter::Ids(set) => {
                ids.iter().enumerate().filter(|(_, id)| set.contains(id)).map(|(o, _)| o as u32).collect()
            }
            BoundFilter::Nothing => RoaringBitmap::new(),
        })
    }
}

/// Reads of a byte slice that fail with a message instead of panicking.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn left(&self) -> usize {
        self.bytes.len() - self.at
    }

    fn take(&mut self, n: usize) -> std::result::Result<&'a [u8], String> {
        if n > self.left() {
            return Err(format!("truncated: {n} bytes wanted at offset {}, {} left", self.at, self.left()));
        }
        let out = &self.bytes[self.at..self.at + n];
        self.at += n;
        Ok(out)
    }

    fn u32(&mut self) -> std::result::Result<u32, String> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
}

#[cfg(test)]
mod tests {
    use super::super::Filter;
    use super::*;
    use proptest::prelude::*;

    fn fields() -> Vec<IndexedField> {
        super::super::test_fields()
    }

    fn payload(i: u32) -> Vec<u8> {
        let langs = ["en", "de", "fr"];
        match i % 7 {
            6 => b"raw bytes".to_vec(),
            5 => b"{}".to_vec(),
            _ => serde_json::json!({
                "lang": if i.is_multiple_of(4) { serde_json::json!([langs[(i % 3) as usize], "xx"]) } else { serde_json::json!(langs[(i % 3) as usize]) },
                "year": 2000 + (i % 25) as i64,
                "score": (i % 10) as f64 / 10.0 - 0.3,
                "open": i.is_multiple_of(2),
            })
            .to_string()
            .into_bytes(),
        }
    }

    const FILTERS: &[&str] = &[
        r#"{"field":"lang","eq":"en"}"#,
        r#"{"field":"lang","in":["xx","fr"]}"#,
        r#"{"field":"year","gte":2010,"lt":2015}"#,
        r#"{"field":"year","in":[2001,2003,2024]}"#,
        r#"{"field":"score","gt":-0.1,"lte":0.4}"#,
        r#"{"field":"score","eq":0.0}"#,
        r#"{"field":"open","eq":false}"#,
        r#"{"not":{"field":"lang","eq":"de"}}"#,
        r#"{"and":[{"field":"open","eq":true},{"or":[{"field":"year","lt":2005},{"ids":[103,104]}]}]}"#,
        r#"{"field":"year","gt":9,"lt":3}"#,
    ];

    #[test]
    fn the_index_agrees_with_payload_evaluation() {
        let fs = fields();
        let payloads: Vec<Vec<u8>> = (0..300).map(payload).collect();
        let ids: Vec<u64> = (0..300).map(|i| 100 + i as u64).collect();
        let index = FieldIndex::build(&fs, payloads.iter().map(|p| p.as_slice()));
        let decoded = FieldIndex::decode(&index.encode(), 300).unwrap();
        assert_eq!(decoded, index);
        for text in FILTERS {
            let f = Filter::from_json(text).unwrap().bind(&fs).unwrap();
            let got = decoded.evaluate(&f, &ids).unwrap();
            let want: RoaringBitmap =
                (0..300u32).filter(|&o| f.matches_payload(ids[o as usize], &payloads[o as usize])).collect();
            assert_eq!(got, want, "{text}");
            assert!(!want.is_empty() || text.contains("\"gt\":9"), "{text} selects something");
        }
    }

    #[test]
    fn a_field_the_index_lacks_is_left_to_payloads() {
        let index = FieldIndex::build(&fields()[..1], [b"{}".as_slice()].into_iter());
        let f = Filter::from_json(r#"{"field":"year","eq":1}"#).unwrap().bind(&fields()).unwrap();
        assert!(index.evaluate(&f, &[1]).is_none());
    }

    #[test]
    fn damage_is_reported() {
        let fs = fields();
        let payloads: Vec<Vec<u8>> = (0..50).map(payload).collect();
        let bytes = FieldIndex::build(&fs, payloads.iter().map(|p| p.as_slice())).encode();
        assert!(FieldIndex::decode(&bytes, 49).unwrap_err().contains("beyond"), "ordinal past the segment");
        assert!(FieldIndex::decode(&bytes[..bytes.len() - 1], 50).is_err());
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(FieldIndex::decode(&longer, 50).unwrap_err().contains("after the last field"));
        let mut v = bytes.clone();
        v[0] = 9;
        assert!(FieldIndex::decode(&v, 50).unwrap_err().contains("version"));
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512), n in 0u32..64) {
            let _ = FieldIndex::decode(&bytes, n);
        }

        #[test]
        fn every_single_byte_flip_is_caught_or_harmless(flip in 0usize..10_000, bit in 0u8..8) {
            let fs = fields();
            let payloads: Vec<Vec<u8>> = (0..40).map(payload).collect();
            let index = FieldIndex::build(&fs, payloads.iter().map(|p| p.as_slice()));
            let mut bytes = index.encode();
            let at = flip % bytes.len();
            bytes[at] ^= 1 << bit;
            // A flip decodes to an error or to a valid index (e.g. another value); never a panic,
            // and a decoded index only names ordinals of the segment.
            if let Ok(d) = FieldIndex::decode(&bytes, 40) {
                let all = Filter::from_json(r#"{"not":{"ids":[]}}"#).unwrap().bind(&fs).unwrap();
                let ids: Vec<u64> = (0..40).collect();
                prop_assert!(d.evaluate(&all, &ids).unwrap().max().is_none_or(|m| m < 40));
            }
        }
    }
}
