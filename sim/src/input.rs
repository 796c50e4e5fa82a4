//! `ioConfig.inputFormat`: how a Kafka record becomes input rows (docs/ingestion/
//! data-formats.md "Input format"). Supported: `json`, `csv`, `tsv` and `kafka` (which wraps
//! one of them and adds the record's timestamp, topic, headers and key). Every other format
//! (avro_stream, protobuf, parquet, orc, regex, ...) is refused with the field's path.
//!
//! Each Kafka record is one input entity, read on its own (SeekableStreamIndexTaskRunner
//! hands each record to the reader): a record can hold several rows (several JSON values,
//! several text lines), and a parse error makes the row, line or whole record unparseable as
//! Druid's readers do. [`InputFormat::parse`] returns one `Ok` per row and one `Err` per
//! unparseable unit (counted as `unparseable` by the caller).
//!
//! csv/tsv with `findColumnsFromHeader`: Kafka records have no file header, and Druid does
//! not refuse the setting; its TextReader runs per record, skips `skipHeaderRows` lines of
//! *each record* and takes the next line of each record as that record's header. So a
//! one-line record gives no row. The emulator does the same.

use crate::error::SimError;
use serde_json::{Map, Value};

/// An input row: field name -> value, before the timestamp is read.
pub type Row = Map<String, Value>;

/// One Kafka record as the input format sees it.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    pub topic: &'a str,
    pub key: Option<&'a [u8]>,
    /// `None` for a tombstone.
    pub value: Option<&'a [u8]>,
    pub headers: &'a [(String, Option<Vec<u8>>)],
    /// The record's timestamp (`ConsumerRecord.timestamp()`, -1 when it has none).
    pub timestamp: i64,
}

/// A parsed `inputFormat`.
#[derive(Debug, Clone, PartialEq)]
pub enum InputFormat {
    Json(JsonFormat),
    Delimited(DelimitedFormat),
    Kafka(Box<KafkaFormat>),
}

/// `{"type":"json"}` (JsonInputFormat).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct JsonFormat {
    /// Each line is one JSON value; a bad line loses only itself (JsonLineReader).
    pub assume_newline_delimited: bool,
    /// Values before a bad one are kept (JsonNodeReader).
    pub use_json_node_reader: bool,
}

/// `{"type":"csv"}` / `{"type":"tsv"}` (CsvInputFormat, DelimitedInputFormat,
/// FlatTextInputFormat).
#[derive(Debug, Clone, PartialEq)]
pub struct DelimitedFormat {
    /// CSV (RFC 4180 quoting) or TSV (a plain split on `delimiter`).
    pub csv: bool,
    pub delimiter: String,
    /// Splits a value into a multi-value (default ctrl+A, `Parsers.DEFAULT_LIST_DELIMITER`).
    pub list_delimiter: String,
    pub columns: Vec<String>,
    pub find_columns_from_header: bool,
    pub skip_header_rows: usize,
    /// `tryParseNumbers`: numeric strings become longs or doubles.
    pub try_parse_numbers: bool,
}

/// Header value encodings of `{"type":"string","encoding":...}` (KafkaStringHeaderFormat).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Charset {
    Utf8,
    Latin1,
    Ascii,
    Utf16,
    Utf16Be,
    Utf16Le,
}

/// `{"type":"kafka"}` (KafkaInputFormat; defaults from its constructor).
#[derive(Debug, Clone, PartialEq)]
pub struct KafkaFormat {
    pub value: InputFormat,
    pub key: Option<InputFormat>,
    /// `headerFormat`; without one, headers are not read (KafkaInputFormat passes no header
    /// parser when `headerFormat` is null).
    pub header_encoding: Option<Charset>,
    pub header_prefix: String,
    pub key_column: String,
    pub timestamp_column: String,
    pub topic_column: String,
}

fn spec_err(m: String) -> SimError {
    SimError::Spec(m)
}

fn check_keys(o: &Map<String, Value>, known: &[&str], path: &str) -> Result<(), SimError> {
    match o
        .iter()
        .find(|(k, v)| !v.is_null() && !known.contains(&k.as_str()))
    {
        Some((k, _)) => Err(spec_err(format!(
            "{path}.{k} is not supported by the emulator"
        ))),
        None => Ok(()),
    }
}

fn get<'a>(o: &'a Map<String, Value>, k: &str) -> Option<&'a Value> {
    o.get(k).filter(|v| !v.is_null())
}

fn flag(o: &Map<String, Value>, k: &str, path: &str) -> Result<Option<bool>, SimError> {
    match get(o, k) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(spec_err(format!("{path}.{k} {other} is not a boolean"))),
    }
}

fn string(o: &Map<String, Value>, k: &str, path: &str) -> Result<Option<String>, SimError> {
    match get(o, k) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(spec_err(format!("{path}.{k} {other} is not a string"))),
    }
}

impl InputFormat {
    /// Reads an `inputFormat` object; `path` names it in errors.
    pub fn from_json(v: &Value, path: &str) -> Result<InputFormat, SimError> {
        let o = v
            .as_object()
            .ok_or_else(|| spec_err(format!("{path} {v} is not an object")))?;
        let ty = o.get("type").and_then(Value::as_str).unwrap_or("");
        match ty {
            "json" => {
                check_keys(
                    o,
                    &[
                        "type",
                        "flattenSpec",
                        "featureSpec",
                        "keepNullColumns",
                        "assumeNewlineDelimited",
                        "useJsonNodeReader",
                    ],
                    path,
                )?;
                // The default flattenSpec (root fields discovered, no explicit fields) is
                // what the emulator does; anything else would change the fields.
                if let Some(fs) = get(o, "flattenSpec") {
                    let discovery = fs
                        .get("useFieldDiscovery")
                        .and_then(Value::as_bool)
                        .unwrap_or(true);
                    let fields = fs
                        .get("fields")
                        .and_then(Value::as_array)
                        .is_some_and(|f| !f.is_empty());
                    if !discovery || fields {
                        return Err(spec_err(format!(
                            "{path}.flattenSpec with fields or without field discovery is not \
                             supported by the emulator"
                        )));
                    }
                }
                if get(o, "featureSpec")
                    .is_some_and(|f| f.as_object().is_none_or(|m| !m.is_empty()))
                {
                    return Err(spec_err(format!(
                        "{path}.featureSpec (Jackson parser features) is not supported by the \
                         emulator"
                    )));
                }
                if flag(o, "keepNullColumns", path)? == Some(true) {
                    return Err(spec_err(format!(
                        "{path}.keepNullColumns=true is not supported by the emulator (null \
                         fields make no columns)"
                    )));
                }
                let f = JsonFormat {
                    assume_newline_delimited: flag(o, "assumeNewlineDelimited", path)?
                        .unwrap_or(false),
                    use_json_node_reader: flag(o, "useJsonNodeReader", path)?.unwrap_or(false),
                };
                // JsonInputFormat: "Cannot use parser assumeNewlineDelimited and
                // useJsonNodeReader together".
                if f.assume_newline_delimited && f.use_json_node_reader {
                    return Err(spec_err(format!(
                        "{path}: cannot use assumeNewlineDelimited and useJsonNodeReader together"
                    )));
                }
                Ok(InputFormat::Json(f))
            }
            "csv" | "tsv" => {
                let csv = ty == "csv";
                let known = [
                    "type",
                    "columns",
                    "listDelimiter",
                    "findColumnsFromHeader",
                    "hasHeaderRow",
                    "skipHeaderRows",
                    "tryParseNumbers",
                    // FlatTextInputFormat serializes `delimiter` for csv too (always ",").
                    "delimiter",
                ];
                check_keys(o, &known, path)?;
                let delimiter = match string(o, "delimiter", path)? {
                    Some(d) if csv && d != "," => {
                        return Err(spec_err(format!(
                            "{path}.delimiter '{d}': the csv format always uses ','"
                        )))
                    }
                    Some(d) if d.is_empty() => {
                        return Err(spec_err(format!("{path}.delimiter must not be empty")))
                    }
                    Some(d) => d,
                    None if csv => ",".to_string(),
                    None => "\t".to_string(),
                };
                let list_delimiter =
                    string(o, "listDelimiter", path)?.unwrap_or_else(|| "\u{1}".to_string());
                let columns: Vec<String> = match get(o, "columns") {
                    None => Vec::new(),
                    Some(Value::Array(cs)) => cs
                        .iter()
                        .map(|c| {
                            c.as_str().map(str::to_string).ok_or_else(|| {
                                spec_err(format!("{path}.columns {c} is not a string"))
                            })
                        })
                        .collect::<Result<_, _>>()?,
                    Some(other) => {
                        return Err(spec_err(format!("{path}.columns {other} is not an array")))
                    }
                };
                let has_header_row = flag(o, "hasHeaderRow", path)?;
                let find = flag(o, "findColumnsFromHeader", path)?;
                // FlatTextInputFormat's checks, in its order.
                let find_columns_from_header = if columns.is_empty() {
                    match (has_header_row, find) {
                        (Some(_), Some(_)) => {
                            return Err(spec_err(format!(
                                "{path}: Cannot accept both [findColumnsFromHeader] and \
                                 [hasHeaderRow]"
                            )))
                        }
                        (None, None) => {
                            return Err(spec_err(format!(
                                "{path}: Either [columns] or [findColumnsFromHeader] must be set"
                            )))
                        }
                        (h, f) => h.or(f).unwrap_or(false),
                    }
                } else {
                    find.unwrap_or(false)
                };
                if delimiter == list_delimiter {
                    return Err(spec_err(format!(
                        "{path}: Cannot have same delimiter and list delimiter of [{delimiter}]"
                    )));
                }
                if let Some(c) = columns.iter().find(|c| c.contains(&delimiter)) {
                    return Err(spec_err(format!(
                        "{path}: Column[{c}] cannot have the delimiter[{delimiter}] in its name"
                    )));
                }
                if columns.is_empty() && !find_columns_from_header {
                    return Err(spec_err(format!(
                        "{path}: If [columns] is not set, the first row of your data must have \
                         your header and [findColumnsFromHeader] must be set to true."
                    )));
                }
                let skip_header_rows = match get(o, "skipHeaderRows") {
                    None => 0,
                    Some(v) => v.as_u64().ok_or_else(|| {
                        spec_err(format!("{path}.skipHeaderRows {v} is not a count"))
                    })? as usize,
                };
                Ok(InputFormat::Delimited(DelimitedFormat {
                    csv,
                    delimiter,
                    list_delimiter,
                    columns,
                    find_columns_from_header,
                    skip_header_rows,
                    try_parse_numbers: flag(o, "tryParseNumbers", path)?.unwrap_or(false),
                }))
            }
            "kafka" => {
                check_keys(
                    o,
                    &[
                        "type",
                        "valueFormat",
                        "keyFormat",
                        "headerFormat",
                        "headerColumnPrefix",
                        "keyColumnName",
                        "timestampColumnName",
                        "topicColumnName",
                    ],
                    path,
                )?;
                let nested = |k: &str| -> Result<Option<InputFormat>, SimError> {
                    match get(o, k) {
                        None => Ok(None),
                        Some(v) => {
                            let f = InputFormat::from_json(v, &format!("{path}.{k}"))?;
                            if matches!(f, InputFormat::Kafka(_)) {
                                return Err(spec_err(format!(
                                    "{path}.{k}: a kafka format cannot wrap another kafka format"
                                )));
                            }
                            Ok(Some(f))
                        }
                    }
                };
                // KafkaInputFormat: "valueFormat must not be null".
                let value = nested("valueFormat")?
                    .ok_or_else(|| spec_err(format!("{path}.valueFormat must not be null")))?;
                let key = nested("keyFormat")?;
                let header_encoding = match get(o, "headerFormat") {
                    None => None,
                    Some(h) => Some(header_charset(h, &format!("{path}.headerFormat"))?),
                };
                Ok(InputFormat::Kafka(Box::new(KafkaFormat {
                    value,
                    key,
                    header_encoding,
                    header_prefix: string(o, "headerColumnPrefix", path)?
                        .unwrap_or_else(|| "kafka.header.".into()),
                    key_column: string(o, "keyColumnName", path)?
                        .unwrap_or_else(|| "kafka.key".into()),
                    timestamp_column: string(o, "timestampColumnName", path)?
                        .unwrap_or_else(|| "kafka.timestamp".into()),
                    topic_column: string(o, "topicColumnName", path)?
                        .unwrap_or_else(|| "kafka.topic".into()),
                })))
            }
            other => Err(spec_err(format!(
                "{path}.type '{other}' is not supported by the emulator (json, csv, tsv, kafka)"
            ))),
        }
    }

    /// The rows of one record: `Ok` per row, `Err` per unparseable unit.
    pub fn parse(&self, rec: &Record) -> Vec<Result<Row, String>> {
        match self {
            InputFormat::Kafka(k) => k.parse(rec),
            // A tombstone has no payload to read.
            _ => match rec.value {
                Some(bytes) => self.parse_bytes(bytes),
                None => Vec::new(),
            },
        }
    }

    fn parse_bytes(&self, bytes: &[u8]) -> Vec<Result<Row, String>> {
        match self {
            InputFormat::Json(j) => j.parse(bytes),
            InputFormat::Delimited(d) => d.parse(bytes),
            InputFormat::Kafka(_) => vec![Err("nested kafka format".into())],
        }
    }

    /// The first value of the first row of `bytes` (KafkaInputReader keeps "only the first
    /// entry" of the key's first row); `Ok(None)` if there is no row.
    fn first_value(&self, bytes: &[u8]) -> Result<Option<Value>, String> {
        match self {
            InputFormat::Json(_) => {
                let text = String::from_utf8_lossy(bytes);
                let mut de = serde_json::Deserializer::from_str(&text);
                match <FirstEntry as serde::Deserialize>::deserialize(&mut de) {
                    Ok(FirstEntry(v)) => Ok(v),
                    Err(e) => Err(format!("Unable to parse key: {e}")),
                }
            }
            InputFormat::Delimited(d) => match d.parse(bytes).into_iter().next() {
                None => Ok(None),
                Some(Err(e)) => Err(e),
                Some(Ok(row)) => Ok(d
                    .columns
                    .first()
                    .and_then(|c| row.get(c).cloned())
                    .or_else(|| row.values().next().cloned())),
            },
            InputFormat::Kafka(_) => Err("nested kafka format".into()),
        }
    }
}

fn header_charset(v: &Value, path: &str) -> Result<Charset, SimError> {
    let o = v
        .as_object()
        .ok_or_else(|| spec_err(format!("{path} {v} is not an object")))?;
    check_keys(o, &["type", "encoding"], path)?;
    let ty = o.get("type").and_then(Value::as_str).unwrap_or("");
    if ty != "string" {
        return Err(spec_err(format!(
            "{path}.type '{ty}' is not a header format (Druid has 'string')"
        )));
    }
    let enc = string(o, "encoding", path)?.unwrap_or_else(|| "UTF-8".into());
    // Charset.forName names and common aliases.
    match enc.to_ascii_uppercase().replace('_', "-").as_str() {
        "UTF-8" | "UTF8" => Ok(Charset::Utf8),
        "ISO-8859-1" | "ISO8859-1" | "LATIN1" | "ISO-LATIN-1" => Ok(Charset::Latin1),
        "US-ASCII" | "ASCII" => Ok(Charset::Ascii),
        "UTF-16" | "UTF16" => Ok(Charset::Utf16),
        "UTF-16BE" => Ok(Charset::Utf16Be),
        "UTF-16LE" => Ok(Charset::Utf16Le),
        other => Err(spec_err(format!(
            "{path}.encoding '{other}' is not supported by the emulator (UTF-8, ISO-8859-1, \
             US-ASCII, UTF-16, UTF-16BE, UTF-16LE)"
        ))),
    }
}

/// `new String(bytes, charset)`: malformed input becomes U+FFFD.
fn decode(bytes: &[u8], cs: Charset) -> String {
    let utf16 = |b: &[u8], be: bool| -> String {
        let units: Vec<u16> = b
            .chunks(2)
            .map(|c| match (c, be) {
                ([a, b], true) => u16::from_be_bytes([*a, *b]),
                ([a, b], false) => u16::from_le_bytes([*a, *b]),
                _ => 0xFFFD,
            })
            .collect();
        String::from_utf16_lossy(&units)
    };
    match cs {
        Charset::Utf8 => String::from_utf8_lossy(bytes).into_owned(),
        Charset::Latin1 => bytes.iter().map(|b| char::from(*b)).collect(),
        Charset::Ascii => bytes
            .iter()
            .map(|b| {
                if b.is_ascii() {
                    char::from(*b)
                } else {
                    '\u{FFFD}'
                }
            })
            .collect(),
        Charset::Utf16Be => utf16(bytes, true),
        Charset::Utf16Le => utf16(bytes, false),
        // Java's UTF-16 decoder reads a byte-order mark, big-endian without one.
        Charset::Utf16 => match bytes {
            [0xFF, 0xFE, rest @ ..] => utf16(rest, false),
            [0xFE, 0xFF, rest @ ..] => utf16(rest, true),
            _ => utf16(bytes, true),
        },
    }
}

impl KafkaFormat {
    /// KafkaInputReader.read: headers (prefixed), then the record timestamp, topic and key
    /// unless a header already used the name, then each value row on top (the payload wins
    /// name clashes: docs/ingestion/data-formats.md "Kafka"). A tombstone gives one row of
    /// the metadata alone.
    fn parse(&self, rec: &Record) -> Vec<Result<Row, String>> {
        let mut meta = Row::new();
        if let Some(cs) = self.header_encoding {
            for (k, v) in rec.headers {
                match v {
                    Some(bytes) => {
                        meta.insert(
                            format!("{}{k}", self.header_prefix),
                            Value::String(decode(bytes, cs)),
                        );
                    }
                    // `new String(null, charset)` throws: the record cannot be read.
                    None => return vec![Err(format!("header [{k}] has a null value"))],
                }
            }
        }
        meta.entry(self.timestamp_column.clone())
            .or_insert_with(|| Value::from(rec.timestamp));
        meta.entry(self.topic_column.clone())
            .or_insert_with(|| Value::String(rec.topic.to_string()));
        if let (Some(kf), Some(key)) = (&self.key, rec.key) {
            match kf.first_value(key) {
                Ok(Some(v)) => {
                    meta.entry(self.key_column.clone()).or_insert(v);
                }
                Ok(None) => {}
                Err(e) => return vec![Err(e)],
            }
        }
        match rec.value {
            None => vec![Ok(meta)],
            Some(bytes) => self
                .value
                .parse_bytes(bytes)
                .into_iter()
                .map(|r| {
                    r.map(|row| {
                        let mut event = meta.clone();
                        event.extend(row);
                        event
                    })
                })
                .collect(),
        }
    }
}

impl JsonFormat {
    fn parse(&self, bytes: &[u8]) -> Vec<Result<Row, String>> {
        let object = |v: Value| -> Result<Row, String> {
            match v {
                Value::Object(m) => Ok(m),
                other => Err(format!("Unable to parse [{other}]: not a JSON object")),
            }
        };
        if self.assume_newline_delimited {
            // JsonLineReader: one value per line, a bad line is one unparseable row.
            let text = String::from_utf8_lossy(bytes);
            return lines(&text)
                .into_iter()
                .map(|l| {
                    serde_json::from_str::<Value>(l)
                        .map_err(|e| format!("Unable to parse row [{l}]: {e}"))
                        .and_then(object)
                })
                .collect();
        }
        let mut out = Vec::new();
        for v in serde_json::Deserializer::from_slice(bytes).into_iter::<Value>() {
            match v
                .map_err(|e| format!("Unable to parse row: {e}"))
                .and_then(object)
            {
                Ok(row) => out.push(Ok(row)),
                Err(e) if self.use_json_node_reader => {
                    // JsonNodeReader keeps the events read before the error.
                    out.push(Err(e));
                    return out;
                }
                // JsonReader: "if a parsing exception occurs, all JSON events that are
                // present in the same streaming record will be discarded".
                Err(e) => return vec![Err(e)],
            }
        }
        out
    }
}

/// Lines as commons-io's LineIterator gives them (TextReader): split on `\n`, `\r\n` or `\r`,
/// no empty last line after a final newline.
fn lines(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        match rest.find(['\n', '\r']) {
            Some(i) => {
                out.push(&rest[..i]);
                let skip = if rest[i..].starts_with("\r\n") { 2 } else { 1 };
                rest = &rest[i + skip..];
            }
            None => {
                out.push(rest);
                break;
            }
        }
    }
    out
}

impl DelimitedFormat {
    fn fields(&self, line: &str) -> Result<Vec<String>, String> {
        if !self.csv {
            return Ok(line
                .split(self.delimiter.as_str())
                .map(str::to_string)
                .collect());
        }
        // CsvInputFormat parses each line with opencsv's RFC4180Parser.
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .from_reader(line.as_bytes());
        match reader.records().next() {
            None => Ok(vec![String::new()]),
            Some(Ok(rec)) => Ok(rec.iter().map(str::to_string).collect()),
            Some(Err(e)) => Err(format!("Unable to parse row [{line}]: {e}")),
        }
    }

    /// ParserUtils.getMultiValueFunction (+ tryParseNumbers): a value holding the list
    /// delimiter is a multi-value; empty strings stay empty (SQL-compatible null handling).
    fn value(&self, s: &str) -> Value {
        let scalar = |s: &str| -> Value {
            if self.try_parse_numbers {
                if let Ok(n) = s.parse::<i64>() {
                    return Value::from(n);
                }
                if let Some(n) = s
                    .parse::<f64>()
                    .ok()
                    .filter(|f| f.is_finite())
                    .and_then(serde_json::Number::from_f64)
                {
                    return Value::Number(n);
                }
            }
            Value::String(s.to_string())
        };
        if s.contains(self.list_delimiter.as_str()) {
            Value::Array(s.split(self.list_delimiter.as_str()).map(scalar).collect())
        } else {
            scalar(s)
        }
    }

    /// TextReader: skip `skipHeaderRows` lines, take the header line if asked, then one row
    /// per line (Utils.zipMapPartial: extra values are dropped, missing ones left out).
    fn parse(&self, bytes: &[u8]) -> Vec<Result<Row, String>> {
        let text = String::from_utf8_lossy(bytes);
        let mut it = lines(&text).into_iter().skip(self.skip_header_rows);
        let header_cols: Vec<String>;
        let columns: &[String] = if self.find_columns_from_header {
            let Some(h) = it.next() else {
                return Vec::new();
            };
            let header = match self.fields(h) {
                Ok(f) => f,
                Err(e) => return vec![Err(e)],
            };
            // ParserUtils.findOrCreateColumnNames / validateFields.
            let mut named: Vec<String> = Vec::new();
            for (i, c) in header.iter().enumerate() {
                let c = if c.is_empty() {
                    format!("column_{}", i + 1)
                } else {
                    c.clone()
                };
                if named.contains(&c) {
                    return vec![Err(format!("Duplicate column entries found : [{c}]"))];
                }
                named.push(c);
            }
            header_cols = named;
            &header_cols
        } else {
            &self.columns
        };
        it.map(|line| {
            let vals = self.fields(line)?;
            Ok(columns
                .iter()
                .zip(vals)
                .map(|(c, v)| (c.clone(), self.value(&v)))
                .collect())
        })
        .collect()
    }
}

/// Deserializes only the first entry of a JSON object (in document order).
struct FirstEntry(Option<Value>);

impl<'de> serde::Deserialize<'de> for FirstEntry {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = FirstEntry;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut m: A,
            ) -> Result<FirstEntry, A::Error> {
                let first = m.next_entry::<String, Value>()?.map(|(_, v)| v);
                while m
                    .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
                    .is_some()
                {}
                Ok(FirstEntry(first))
            }
        }
        d.deserialize_map(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fmt(v: Value) -> InputFormat {
        InputFormat::from_json(&v, "inputFormat").unwrap()
    }

    fn rec<'a>(value: Option<&'a [u8]>, headers: &'a [(String, Option<Vec<u8>>)]) -> Record<'a> {
        Record {
            topic: "t",
            key: Some(b"k1\tignored"),
            value,
            headers,
            timestamp: 1234,
        }
    }

    fn ok(rows: Vec<Result<Row, String>>) -> Vec<Value> {
        rows.into_iter()
            .map(|r| Value::Object(r.expect("row")))
            .collect()
    }

    #[test]
    fn json_records() {
        let j = fmt(json!({"type": "json"}));
        let two = br#"{"a":1} {"a":2}"#;
        assert_eq!(
            ok(j.parse(&rec(Some(two), &[]))),
            vec![json!({"a":1}), json!({"a":2})]
        );
        // One bad event discards the whole record (JsonReader).
        let bad = b"{\"a\":1}\n{oops";
        assert_eq!(j.parse(&rec(Some(bad), &[])).len(), 1);
        assert!(j.parse(&rec(Some(bad), &[]))[0].is_err());
        let lines = fmt(json!({"type": "json", "assumeNewlineDelimited": true}));
        let r = lines.parse(&rec(Some(bad), &[]));
        assert!(r[0].is_ok() && r[1].is_err(), "only the bad line is lost");
        let node = fmt(json!({"type": "json", "useJsonNodeReader": true}));
        let r = node.parse(&rec(Some(bad), &[]));
        assert!(r[0].is_ok() && r[1].is_err());
        assert!(
            j.parse(&rec(None, &[])).is_empty(),
            "a tombstone has no rows"
        );
        assert!(
            j.parse(&rec(Some(b"[1]"), &[]))[0].is_err(),
            "not an object"
        );
    }

    #[test]
    fn delimited_records() {
        let csv = fmt(json!({"type": "csv", "columns": ["ts", "user", "n"], "listDelimiter": "|"}));
        let body = b"2026-01-01T00:00:00Z,\"a, b\",3\n2026-01-01T00:00:01Z,x|y\r\n";
        assert_eq!(
            ok(csv.parse(&rec(Some(body), &[]))),
            vec![
                json!({"ts": "2026-01-01T00:00:00Z", "user": "a, b", "n": "3"}),
                json!({"ts": "2026-01-01T00:00:01Z", "user": ["x", "y"]}),
            ]
        );
        let hdr = fmt(
            json!({"type": "csv", "findColumnsFromHeader": true, "skipHeaderRows": 1, "tryParseNumbers": true}),
        );
        let body = b"junk\nts,n,\n1,2.5,z";
        assert_eq!(
            ok(hdr.parse(&rec(Some(body), &[]))),
            vec![json!({"ts": 1, "n": 2.5, "column_3": "z"})]
        );
        assert!(
            hdr.parse(&rec(Some(b"junk\nts,n"), &[])).is_empty(),
            "header only: no rows"
        );
        let tsv = fmt(json!({"type": "tsv", "columns": ["a", "b"], "delimiter": "|"}));
        assert_eq!(
            ok(tsv.parse(&rec(Some(b"\"1\"|2|3"), &[]))),
            vec![json!({"a": "\"1\"", "b": "2"})]
        );
        for (bad, word) in [
            (
                json!({"type": "csv"}),
                "Either [columns] or [findColumnsFromHeader]",
            ),
            (
                json!({"type": "csv", "columns": ["a,b"]}),
                "cannot have the delimiter",
            ),
            (
                json!({"type": "tsv", "columns": ["a"], "delimiter": "|", "listDelimiter": "|"}),
                "same delimiter",
            ),
            (
                json!({"type": "csv", "findColumnsFromHeader": true, "hasHeaderRow": true}),
                "both",
            ),
            (json!({"type": "regex", "pattern": "(.*)"}), "regex"),
            (json!({"type": "avro_stream"}), "avro_stream"),
        ] {
            let e = InputFormat::from_json(&bad, "inputFormat")
                .unwrap_err()
                .to_string();
            assert!(e.contains(word), "{bad}: {e}");
        }
    }

    #[test]
    fn kafka_records() {
        let k = fmt(json!({
            "type": "kafka",
            "valueFormat": {"type": "json"},
            "headerFormat": {"type": "string"},
            "keyFormat": {"type": "tsv", "findColumnsFromHeader": false, "columns": ["x"]}
        }));
        let headers = vec![
            ("env".to_string(), Some(b"prod".to_vec())),
            ("kafka.topic".to_string(), Some(b"h".to_vec())),
        ];
        let rows = ok(k.parse(&rec(
            Some(br#"{"a":1,"kafka.key":"payload wins"}"#),
            &headers,
        )));
        assert_eq!(
            rows,
            vec![json!({
                "a": 1,
                "kafka.header.env": "prod",
                "kafka.header.kafka.topic": "h",
                "kafka.timestamp": 1234,
                "kafka.topic": "t",
                "kafka.key": "payload wins"
            })]
        );
        let tomb = ok(k.parse(&rec(None, &headers)));
        assert_eq!(tomb[0]["kafka.key"], "k1", "the key's first column");
        // Without headerFormat the headers are not read.
        let plain = fmt(
            json!({"type": "kafka", "valueFormat": {"type": "json"}, "timestampColumnName": "kts"}),
        );
        let rows = ok(plain.parse(&rec(Some(b"{}"), &headers)));
        assert_eq!(rows, vec![json!({"kts": 1234, "kafka.topic": "t"})]);
        let latin = fmt(
            json!({"type": "kafka", "valueFormat": {"type": "json"}, "headerFormat": {"type": "string", "encoding": "ISO-8859-1"}, "headerColumnPrefix": "h_"}),
        );
        let hs = vec![("e".to_string(), Some(vec![0xE9]))];
        assert_eq!(ok(latin.parse(&rec(Some(b"{}"), &hs)))[0]["h_e"], "\u{e9}");
        assert!(InputFormat::from_json(&json!({"type": "kafka"}), "f").is_err());
        let jkey = fmt(
            json!({"type": "kafka", "valueFormat": {"type": "json"}, "keyFormat": {"type": "json"}}),
        );
        let mut r = rec(Some(b"{}"), &[]);
        r.key = Some(br#"{"z": 1, "a": 2}"#);
        assert_eq!(
            ok(jkey.parse(&r))[0]["kafka.key"],
            1,
            "first field in document order"
        );
    }
}
