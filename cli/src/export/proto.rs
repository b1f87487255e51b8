//! The pprof messages (`perftools.profiles`, `cli/proto/profile.proto`, vendored from Debian's
//! golang-github-google-pprof-dev), written out as prost derive structs: no build script and no
//! protoc. A unit test reads the vendored proto and checks every message and field here against
//! it: name, number, type and repetition.

/// A profile: every string is an index into `string_table`, whose entry 0 is "".
#[derive(Clone, PartialEq, prost::Message)]
pub struct Profile {
    #[prost(message, repeated, tag = "1")]
    pub sample_type: Vec<ValueType>,
    #[prost(message, repeated, tag = "2")]
    pub sample: Vec<Sample>,
    #[prost(message, repeated, tag = "3")]
    pub mapping: Vec<Mapping>,
    #[prost(message, repeated, tag = "4")]
    pub location: Vec<Location>,
    #[prost(message, repeated, tag = "5")]
    pub function: Vec<Function>,
    #[prost(string, repeated, tag = "6")]
    pub string_table: Vec<String>,
    #[prost(int64, tag = "7")]
    pub drop_frames: i64,
    #[prost(int64, tag = "8")]
    pub keep_frames: i64,
    #[prost(int64, tag = "9")]
    pub time_nanos: i64,
    #[prost(int64, tag = "10")]
    pub duration_nanos: i64,
    #[prost(message, optional, tag = "11")]
    pub period_type: Option<ValueType>,
    #[prost(int64, tag = "12")]
    pub period: i64,
    #[prost(int64, repeated, tag = "13")]
    pub comment: Vec<i64>,
    #[prost(int64, tag = "14")]
    pub default_sample_type: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ValueType {
    #[prost(int64, tag = "1")]
    pub r#type: i64,
    #[prost(int64, tag = "2")]
    pub unit: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Sample {
    /// Leaf first.
    #[prost(uint64, repeated, tag = "1")]
    pub location_id: Vec<u64>,
    #[prost(int64, repeated, tag = "2")]
    pub value: Vec<i64>,
    #[prost(message, repeated, tag = "3")]
    pub label: Vec<Label>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Label {
    #[prost(int64, tag = "1")]
    pub key: i64,
    #[prost(int64, tag = "2")]
    pub str: i64,
    #[prost(int64, tag = "3")]
    pub num: i64,
    #[prost(int64, tag = "4")]
    pub num_unit: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Mapping {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(uint64, tag = "2")]
    pub memory_start: u64,
    #[prost(uint64, tag = "3")]
    pub memory_limit: u64,
    #[prost(uint64, tag = "4")]
    pub file_offset: u64,
    #[prost(int64, tag = "5")]
    pub filename: i64,
    #[prost(int64, tag = "6")]
    pub build_id: i64,
    #[prost(bool, tag = "7")]
    pub has_functions: bool,
    #[prost(bool, tag = "8")]
    pub has_filenames: bool,
    #[prost(bool, tag = "9")]
    pub has_line_numbers: bool,
    #[prost(bool, tag = "10")]
    pub has_inline_frames: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Location {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(uint64, tag = "2")]
    pub mapping_id: u64,
    #[prost(uint64, tag = "3")]
    pub address: u64,
    /// The innermost (inlined) function first, the function the address is in last.
    #[prost(message, repeated, tag = "4")]
    pub line: Vec<Line>,
    #[prost(bool, tag = "5")]
    pub is_folded: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Line {
    #[prost(uint64, tag = "1")]
    pub function_id: u64,
    #[prost(int64, tag = "2")]
    pub line: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Function {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(int64, tag = "2")]
    pub name: i64,
    #[prost(int64, tag = "3")]
    pub system_name: i64,
    #[prost(int64, tag = "4")]
    pub filename: i64,
    #[prost(int64, tag = "5")]
    pub start_line: i64,
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    /// message -> field name -> (number, type, repeated).
    type Schema = BTreeMap<String, BTreeMap<String, (u32, String, bool)>>;

    /// The messages and fields of a proto3 file (the subset profile.proto uses).
    fn proto_schema(text: &str) -> Schema {
        let mut out = Schema::new();
        let mut current: Option<String> = None;
        for line in text.lines() {
            let line = line.split("//").next().unwrap_or("").trim();
            if let Some(rest) = line.strip_prefix("message ") {
                let name = rest.trim_end_matches('{').trim().to_string();
                out.insert(name.clone(), BTreeMap::new());
                current = Some(name);
            } else if line == "}" {
                current = None;
            } else if let (Some(m), Some((decl, num))) = (&current, line.split_once('=')) {
                let mut words: Vec<&str> = decl.split_whitespace().collect();
                let repeated = words.first() == Some(&"repeated");
                if repeated {
                    words.remove(0);
                }
                let [ty, name] = words[..] else {
                    panic!("unexpected field line {line:?}");
                };
                let num = num.trim().trim_end_matches(';').trim().parse().unwrap();
                out.get_mut(m)
                    .unwrap()
                    .insert(name.to_string(), (num, ty.to_string(), repeated));
            }
        }
        out
    }

    /// The same from the prost attributes of this file's structs: a message-typed field's type
    /// is the struct it holds.
    fn rust_schema(text: &str) -> Schema {
        let mut out = Schema::new();
        let mut current: Option<String> = None;
        let mut attr: Option<(String, bool, u32)> = None;
        for line in text.lines().map(str::trim) {
            if line == "#[cfg(test)]" {
                break;
            }
            if let Some(rest) = line.strip_prefix("pub struct ") {
                let name = rest.trim_end_matches('{').trim().to_string();
                out.insert(name.clone(), BTreeMap::new());
                current = Some(name);
            } else if let Some(inner) = line
                .strip_prefix("#[prost(")
                .and_then(|l| l.strip_suffix(")]"))
            {
                let parts: Vec<&str> = inner.split(',').map(str::trim).collect();
                let tag = parts
                    .iter()
                    .find_map(|p| p.strip_prefix("tag = \""))
                    .and_then(|t| t.trim_end_matches('"').parse().ok())
                    .unwrap();
                attr = Some((parts[0].to_string(), parts.contains(&"repeated"), tag));
            } else if let (Some(m), Some((ty, repeated, tag))) = (&current, attr.take()) {
                let decl = line.strip_prefix("pub ").unwrap();
                let (name, rust_ty) = decl.split_once(':').unwrap();
                let name = name.trim().trim_start_matches("r#").to_string();
                let ty = if ty == "message" {
                    // Vec<ValueType>, Option<ValueType>
                    let t = rust_ty.trim().trim_end_matches(',').trim_end_matches('>');
                    t.rsplit('<').next().unwrap().to_string()
                } else {
                    ty
                };
                out.get_mut(m).unwrap().insert(name, (tag, ty, repeated));
            }
        }
        out
    }

    #[test]
    fn every_message_and_field_matches_the_vendored_proto() {
        let proto = proto_schema(include_str!("../../proto/profile.proto"));
        let rust = rust_schema(include_str!("proto.rs"));
        assert_eq!(proto.len(), 8, "{proto:?}");
        assert_eq!(
            proto["Profile"]["sample_type"],
            (1, "ValueType".to_string(), true)
        );
        for (msg, fields) in &proto {
            let ours = rust.get(msg).unwrap_or_else(|| panic!("no struct {msg}"));
            assert_eq!(ours, fields, "message {msg}");
        }
        assert_eq!(rust.len(), proto.len());
    }
}
