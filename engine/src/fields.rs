//! Fields: drop or mask parts of a JSON answer by the caller's level (permissions/fields.py).
//!
//! Rules compile once per snapshot into one plan (a trie) per level; filtering an answer is
//! one walk over the ruled keys only. Answers with no rule for the level, and answers that
//! are not JSON, pass through unparsed.

use serde_json::Value;

use crate::errors::GatewayError;
use crate::pii::Mask;
use crate::snapshot::FastMap;

/// Account levels: 0 registered, 1 primary (户号 bound), 2 advanced (real name verified).
pub const LEVELS: std::ops::RangeInclusive<u8> = 0..=2;

/// One rule as the admin API stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldRule {
    pub path: String,
    pub action: String,
    pub below_level: u8,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Key(String),
    Each,
}

#[derive(Debug, Default, Clone)]
struct Node {
    /// In rule order, so that a masked object's ruled keys are visited as Python does.
    children: Vec<(String, Node)>,
    each: Option<Box<Node>>,
    drop: bool,
    mask: Option<Mask>,
}

impl Node {
    fn child(&mut self, key: &str) -> &mut Node {
        let at = match self.children.iter().position(|(k, _)| k == key) {
            Some(at) => at,
            None => {
                self.children.push((key.to_owned(), Node::default()));
                self.children.len() - 1
            }
        };
        &mut self.children[at].1
    }

    fn get(&self, key: &str) -> Option<&Node> {
        self.children.iter().find(|(k, _)| k == key).map(|(_, n)| n)
    }
}

fn is_key(text: &str) -> bool {
    let mut chars = text.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn parse_path(path: &str) -> Result<Vec<Step>, String> {
    if path.is_empty() {
        return Err("a path names at least one field".into());
    }
    let mut steps = Vec::new();
    for (position, segment) in path.split('.').enumerate() {
        let key = segment.trim_end_matches("[]");
        let brackets = &segment[key.len()..];
        if segment.is_empty() || (!key.is_empty() && !is_key(key)) {
            return Err(format!("{segment:?} is not a field"));
        }
        if key.is_empty() && position > 0 {
            return Err(format!(
                "{segment:?}: [] follows a field name, or starts the path"
            ));
        }
        if !key.is_empty() {
            steps.push(Step::Key(key.to_owned()));
        }
        steps.extend((0..brackets.len() / 2).map(|_| Step::Each));
    }
    if steps.last() == Some(&Step::Each) {
        return Err("a path ends with a field name, not []".into());
    }
    Ok(steps)
}

fn parse_action(action: &str) -> Result<Option<Mask>, String> {
    if action == "drop" {
        return Ok(None);
    }
    match action.strip_prefix("mask:").map(Mask::parse) {
        Some(Some(mask)) => Ok(Some(mask)),
        Some(None) => Err(format!("unknown mask kind in {action:?}")),
        None => Err(format!("unknown action {action:?}: drop or mask:<kind>")),
    }
}

fn insert(root: &mut Node, steps: &[Step], mask: Option<Mask>) {
    let mut node = root;
    for step in steps {
        node = match step {
            Step::Each => node.each.get_or_insert_with(Default::default),
            Step::Key(key) => node.child(key),
        };
    }
    match mask {
        None => node.drop = true,
        Some(mask) if node.mask.is_none() => node.mask = Some(mask), // the first mask wins
        Some(_) => {}
    }
}

fn prune(node: &mut Node) {
    // Below a dropped field nothing is left to do.
    for (_, child) in &mut node.children {
        if child.drop {
            child.children.clear();
            child.each = None;
        } else {
            prune(child);
        }
    }
    if let Some(each) = &mut node.each {
        prune(each);
    }
}

/// Field rules compiled per level.
#[derive(Debug, Default)]
pub struct FieldFilter {
    plans: FastMap<u8, Node>,
}

impl FieldFilter {
    /// The rules compiled into one plan per level.
    pub fn compile(rules: &[FieldRule]) -> Result<Self, String> {
        let mut plans: FastMap<u8, Node> = FastMap::default();
        for rule in rules {
            let steps =
                parse_path(&rule.path).map_err(|e| format!("field rule {:?}: {e}", rule.path))?;
            let mask = parse_action(&rule.action)
                .map_err(|e| format!("field rule {:?}: {e}", rule.path))?;
            if !(1..=3).contains(&rule.below_level) {
                return Err(format!("field rule {:?}: below_level is 1..3", rule.path));
            }
            for level in 0..rule.below_level {
                insert(plans.entry(level).or_default(), &steps, mask);
            }
        }
        for plan in plans.values_mut() {
            prune(plan);
        }
        Ok(Self { plans })
    }

    /// Plans compiled by Python (gateway/engine.py): ``{"<level>": node}`` where a node is
    /// ``{"children": {key: node}, "each": node | null, "drop": bool, "mask": kind | null}``.
    pub fn from_plans(plans: &serde_json::Map<String, Value>) -> Result<Self, String> {
        fn node(value: &Value) -> Result<Node, String> {
            let object = value.as_object().ok_or("a plan node is an object")?;
            let mut children = Vec::new();
            if let Some(Value::Object(map)) = object.get("children") {
                for (key, child) in map {
                    children.push((key.clone(), node(child)?));
                }
            }
            let each = match object.get("each") {
                None | Some(Value::Null) => None,
                Some(child) => Some(Box::new(node(child)?)),
            };
            let mask = match object.get("mask").and_then(Value::as_str) {
                None => None,
                Some(kind) => {
                    Some(Mask::parse(kind).ok_or_else(|| format!("unknown mask kind {kind:?}"))?)
                }
            };
            let drop = object.get("drop").and_then(Value::as_bool).unwrap_or(false);
            Ok(Node {
                children,
                each,
                drop,
                mask,
            })
        }
        let mut compiled = FastMap::default();
        for (level, plan) in plans {
            let level: u8 = level.parse().map_err(|_| format!("plan level {level:?}"))?;
            compiled.insert(level, node(plan)?);
        }
        Ok(Self { plans: compiled })
    }

    /// Whether any rule hits callers of ``level`` (if not, the body needs no parsing).
    pub fn applies(&self, level: u8) -> bool {
        self.plans.contains_key(&level)
    }

    /// ``document`` filtered for ``level``, in place.
    pub fn apply(&self, document: &mut Value, level: u8) {
        if let Some(plan) = self.plans.get(&level) {
            walk(document, plan);
        }
    }
}

fn walk(value: &mut Value, node: &Node) {
    match value {
        Value::Object(map) => {
            for (key, child) in &node.children {
                if child.drop {
                    map.shift_remove(key);
                } else if let Some(item) = map.get_mut(key) {
                    match child.mask {
                        Some(mask) => masked(item, mask, Some(child)),
                        None => walk(item, child),
                    }
                }
            }
        }
        Value::Array(items) => {
            if let Some(each) = &node.each {
                for item in items {
                    walk(item, each);
                }
            }
        }
        _ => {}
    }
}

fn masked(value: &mut Value, mask: Mask, node: Option<&Node>) {
    match value {
        Value::String(text) => *text = mask.apply(text),
        Value::Number(number) => *value = Value::String(mask.apply(&number.to_string())),
        Value::Object(map) => {
            if let Some(node) = node {
                for (key, ruled) in &node.children {
                    if ruled.drop {
                        map.shift_remove(key);
                    }
                }
            }
            for (key, item) in map.iter_mut() {
                match node.and_then(|n| n.get(key)) {
                    None => masked(item, mask, None),
                    Some(child) => masked(item, child.mask.unwrap_or(mask), Some(child)),
                }
            }
        }
        Value::Array(items) => {
            let each = node.and_then(|n| n.each.as_deref());
            for item in items {
                masked(item, mask, each);
            }
        }
        Value::Null | Value::Bool(_) => {}
    }
}

/// Whether a content type is JSON (``application/json`` or any ``…+json``).
pub fn is_json(content_type: Option<&[u8]>) -> bool {
    let Some(raw) = content_type else {
        return false;
    };
    let text = String::from_utf8_lossy(raw);
    let media = text
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    media == "application/json" || media.ends_with("+json")
}

/// A body filtered for ``level``: None when it passes unchanged; broken JSON is a 502.
///
/// One pass over the bytes ([`filter_json`]): what the plan does not touch is copied as it is.
pub fn filter_body(
    body: &[u8],
    content_type: Option<&[u8]>,
    filter: &FieldFilter,
    level: u8,
) -> Result<Option<Vec<u8>>, GatewayError> {
    let plan = match filter.plans.get(&level) {
        Some(plan) if !body.is_empty() && is_json(content_type) => plan,
        _ => return Ok(None),
    };
    filter_json(body, plan).map(Some).map_err(|_| {
        // Passing it on raw would leak exactly the fields the rules are there to hide.
        GatewayError::UpstreamBadResponse(
            "the business system's answer claims to be JSON but does not parse".into(),
        )
    })
}

/// ``body`` filtered by ``plan`` without building a [`Value`]: objects and arrays on the
/// plan's paths are read entry by entry, ruled values dropped or masked as [`walk`] and
/// [`masked`] do, and every other value copied byte for byte once serde_json has checked it
/// (`RawValue`), so the output holds the same content as ``walk`` + ``to_vec`` would. One
/// difference: off the plan serde_json checks the syntax only, so a lone surrogate escape
/// (``"\ud800"``) or a number beyond f64 (``1e400``) there passes as it came, where a
/// whole-document parse refused the answer; the fields the rules name are parsed in full. A
/// repeated key keeps every copy, each ruled alike (a `Value` kept the last one only).
fn filter_json(body: &[u8], plan: &Node) -> Result<Vec<u8>, serde_json::Error> {
    let mut out = Vec::with_capacity(body.len());
    let mut reader = serde_json::Deserializer::from_slice(body);
    Walk {
        node: plan,
        out: &mut out,
    }
    .deserialize(&mut reader)?;
    reader.end()?;
    Ok(out)
}

mod stream {
    //! The serde seeds of [`super::filter_json`]: each writes the value it reads into ``out``.

    use std::borrow::Cow;
    use std::fmt;

    use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
    use serde_json::Number;
    use serde_json::value::RawValue;

    use super::Node;
    use crate::pii::Mask;

    type Out<'o> = &'o mut Vec<u8>;

    fn string(out: &mut Vec<u8>, text: &str) {
        // Writing into a Vec does not fail.
        let _ = serde_json::to_writer(&mut *out, text);
    }

    fn number(out: &mut Vec<u8>, number: &Number) {
        let _ = serde_json::to_writer(&mut *out, number);
    }

    /// An object key, borrowed from the body when it has no escapes.
    struct Key;

    impl<'de> DeserializeSeed<'de> for Key {
        type Value = Cow<'de, str>;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_str(self)
        }
    }

    impl<'de> Visitor<'de> for Key {
        type Value = Cow<'de, str>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a key")
        }
        fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
            Ok(Cow::Borrowed(v))
        }
        fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Cow::Owned(v.to_owned()))
        }
    }

    fn key(out: &mut Vec<u8>, key: Cow<'_, str>) {
        match key {
            // Unescaped in the body: no quote, backslash or control character in it.
            Cow::Borrowed(raw) => {
                out.push(b'"');
                out.extend_from_slice(raw.as_bytes());
                out.push(b'"');
            }
            Cow::Owned(text) => string(out, &text),
        }
    }

    /// A value off the plan: checked and copied as it is.
    struct Copy<'o>(Out<'o>);

    impl<'de> DeserializeSeed<'de> for Copy<'_> {
        type Value = ();
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            let raw: &'de RawValue = serde::Deserialize::deserialize(d)?;
            self.0.extend_from_slice(raw.get().as_bytes());
            Ok(())
        }
    }

    /// A value on the plan's paths (``walk``): ruled children dropped, masked or walked.
    pub(super) struct Walk<'p, 'o> {
        pub node: &'p Node,
        pub out: Out<'o>,
    }

    impl<'de> DeserializeSeed<'de> for Walk<'_, '_> {
        type Value = ();
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_any(self)
        }
    }

    /// Scalars where the plan expects an object or an array: written back as they are.
    macro_rules! scalars {
        () => {
            fn visit_bool<E>(self, v: bool) -> Result<(), E> {
                self.out
                    .extend_from_slice(if v { b"true" } else { b"false" });
                Ok(())
            }
            fn visit_unit<E>(self) -> Result<(), E> {
                self.out.extend_from_slice(b"null");
                Ok(())
            }
        };
    }

    impl<'de> Visitor<'de> for Walk<'_, '_> {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("JSON")
        }
        scalars!();
        fn visit_u64<E>(self, v: u64) -> Result<(), E> {
            number(self.out, &Number::from(v));
            Ok(())
        }
        fn visit_i64<E>(self, v: i64) -> Result<(), E> {
            number(self.out, &Number::from(v));
            Ok(())
        }
        fn visit_f64<E>(self, v: f64) -> Result<(), E> {
            match Number::from_f64(v) {
                Some(n) => number(self.out, &n),
                None => self.out.extend_from_slice(b"null"),
            }
            Ok(())
        }
        fn visit_str<E>(self, v: &str) -> Result<(), E> {
            string(self.out, v);
            Ok(())
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            self.out.push(b'{');
            let mut first = true;
            while let Some(name) = map.next_key_seed(Key)? {
                let child = self.node.get(&name);
                if child.is_some_and(|c| c.drop) {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
                if !std::mem::take(&mut first) {
                    self.out.push(b',');
                }
                key(self.out, name);
                self.out.push(b':');
                match child {
                    None => map.next_value_seed(Copy(self.out))?,
                    Some(child) => match child.mask {
                        Some(mask) => map.next_value_seed(Masked {
                            mask,
                            node: Some(child),
                            out: self.out,
                        })?,
                        None => map.next_value_seed(Walk {
                            node: child,
                            out: self.out,
                        })?,
                    },
                }
            }
            self.out.push(b'}');
            Ok(())
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            self.out.push(b'[');
            let mut first = true;
            loop {
                let comma = !std::mem::take(&mut first);
                let at = self.out.len();
                if comma {
                    self.out.push(b',');
                }
                let more = match self.node.each.as_deref() {
                    Some(each) => seq.next_element_seed(Walk {
                        node: each,
                        out: self.out,
                    })?,
                    None => seq.next_element_seed(Copy(self.out))?,
                };
                if more.is_none() {
                    self.out.truncate(at);
                    break;
                }
            }
            self.out.push(b']');
            Ok(())
        }
    }

    /// A masked value (``masked``): strings and numbers masked, objects and arrays masked
    /// throughout (ruled children dropped, or masked by their own kind), the rest as it is.
    struct Masked<'p, 'o> {
        mask: Mask,
        node: Option<&'p Node>,
        out: Out<'o>,
    }

    impl<'de> DeserializeSeed<'de> for Masked<'_, '_> {
        type Value = ();
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_any(self)
        }
    }

    impl Masked<'_, '_> {
        fn text(self, text: &str) {
            string(self.out, &self.mask.apply(text));
        }
    }

    impl<'de> Visitor<'de> for Masked<'_, '_> {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("JSON")
        }
        scalars!();
        fn visit_u64<E>(self, v: u64) -> Result<(), E> {
            self.text(&Number::from(v).to_string());
            Ok(())
        }
        fn visit_i64<E>(self, v: i64) -> Result<(), E> {
            self.text(&Number::from(v).to_string());
            Ok(())
        }
        fn visit_f64<E>(self, v: f64) -> Result<(), E> {
            match Number::from_f64(v) {
                Some(n) => self.text(&n.to_string()),
                None => self.out.extend_from_slice(b"null"),
            }
            Ok(())
        }
        fn visit_str<E>(self, v: &str) -> Result<(), E> {
            self.text(v);
            Ok(())
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            self.out.push(b'{');
            let mut first = true;
            while let Some(name) = map.next_key_seed(Key)? {
                let child = self.node.and_then(|n| n.get(&name));
                if child.is_some_and(|c| c.drop) {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
                if !std::mem::take(&mut first) {
                    self.out.push(b',');
                }
                key(self.out, name);
                self.out.push(b':');
                let (mask, node) = match child {
                    None => (self.mask, None),
                    Some(child) => (child.mask.unwrap_or(self.mask), Some(child)),
                };
                map.next_value_seed(Masked {
                    mask,
                    node,
                    out: self.out,
                })?;
            }
            self.out.push(b'}');
            Ok(())
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            let each = self.node.and_then(|n| n.each.as_deref());
            self.out.push(b'[');
            let mut first = true;
            loop {
                let at = self.out.len();
                if !std::mem::take(&mut first) {
                    self.out.push(b',');
                }
                let more = seq.next_element_seed(Masked {
                    mask: self.mask,
                    node: each,
                    out: self.out,
                })?;
                if more.is_none() {
                    self.out.truncate(at);
                    break;
                }
            }
            self.out.push(b']');
            Ok(())
        }
    }
}

use serde::de::DeserializeSeed as _;
use stream::Walk;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rule(path: &str, action: &str, below_level: u8) -> FieldRule {
        FieldRule {
            path: path.into(),
            action: action.into(),
            below_level,
        }
    }

    #[test]
    fn masks_and_drops_by_level() {
        let filter = FieldFilter::compile(&[
            rule("name", "mask:name", 2),
            rule("address", "mask:address", 2),
            rule("items[].address", "mask:address", 2),
            rule("secret", "drop", 3),
        ])
        .unwrap();
        let body = r#"{"name":"董小明","address":"浙江省杭州市西湖区文三路1号","items":[{"address":"杭州市西湖区文三路","n":1}],"secret":"x","voltage":"220V"}"#.as_bytes();
        let ct = Some(&b"application/json; charset=utf-8"[..]);
        let level1 = filter_body(body, ct, &filter, 1).unwrap().unwrap();
        assert_eq!(
            String::from_utf8(level1).unwrap(),
            r#"{"name":"董**","address":"浙江省杭州市西湖区****","items":[{"address":"杭州市西湖区****","n":1}],"voltage":"220V"}"#
        );
        let level2 = filter_body(body, ct, &filter, 2).unwrap().unwrap();
        assert!(
            String::from_utf8(level2)
                .unwrap()
                .contains(r#""name":"董小明""#)
        );
        // Not JSON, or no rule for the level: passes untouched and unparsed.
        assert_eq!(
            filter_body(b"not json", Some(b"text/plain"), &filter, 0).unwrap(),
            None
        );
        let none = FieldFilter::compile(&[rule("name", "mask:name", 1)]).unwrap();
        assert_eq!(filter_body(b"{broken", ct, &none, 1).unwrap(), None);
        assert!(filter_body(b"{broken", ct, &filter, 0).is_err());
    }

    #[test]
    fn plans_compiled_by_python_filter_alike() {
        // What gateway/engine.py sends for `name mask:name below 2`, `items[].address drop`.
        let node = json!({"children": {
            "name": {"children": {}, "each": null, "drop": false, "mask": "name"},
            "items": {"children": {}, "each": {"children": {"address": {"children": {}, "each": null, "drop": true, "mask": null}}, "each": null, "drop": false, "mask": null}, "drop": false, "mask": null},
        }, "each": null, "drop": false, "mask": null});
        let plans = json!({"0": node.clone(), "1": node});
        let filter = FieldFilter::from_plans(plans.as_object().unwrap()).unwrap();
        assert!(filter.applies(1) && !filter.applies(2));
        let mut doc = json!({"name": "张三", "items": [{"address": "x", "n": 1}]});
        filter.apply(&mut doc, 1);
        assert_eq!(doc, json!({"name": "张*", "items": [{"n": 1}]}));
    }

    /// The one-pass filter against the `Value` walk it replaced: the same content, and the
    /// same bytes for compact input; broken JSON refused by both.
    #[test]
    fn one_pass_filter_matches_the_value_walk() {
        let filter = FieldFilter::compile(&[
            rule("name", "mask:name", 3),
            rule("secret", "drop", 3),
            rule("customer", "mask:customer_no", 3),
            rule("customer.id", "drop", 3),
            rule("customer.phone", "mask:phone", 3),
            rule("items[].address", "mask:address", 3),
            rule("items[].token", "drop", 3),
            rule("deep.a.b", "mask:email", 3),
            rule("grid[][].name", "mask:name", 3),
        ])
        .unwrap();
        let plan = &filter.plans[&0];
        let reference = |body: &str| -> Option<Value> {
            let mut document: Value = serde_json::from_str(body).ok()?;
            filter.apply(&mut document, 0);
            Some(document)
        };
        let documents = [
            r#"{"name":"董小明","secret":"x","voltage":"220V","n":1.5,"e":-3,"big":18446744073709551615}"#,
            r#"{"customer":{"id":1,"no":3300000001,"phone":"13812345678","ok":true,"n":null,"f":-12.5,"list":[1,"ab",{"phone":"1"}]}}"#,
            r#"{"items":[{"address":"浙江省杭州市西湖区文三路1号","token":"t","n":[1,2]},5,"s",null,{"x":{}}],"other":[{"address":"kept"}]}"#,
            r#"{"deep":{"a":{"b":"zhang@example.com","c":"kept"},"z":[]},"grid":[[{"name":"张三"}],[],[{"name":7}]]}"#,
            r#"{"name":{"first":"张","last":"三丰"},"items":{"address":"not an array"},"deep":"scalar","grid":[1,[2]]}"#,
            r#"[{"name":"张三"}]"#,
            r#""just a string""#,
            r#"{"a":"\u0041\"\\\/\n","nam\u0065":"王五","emoji":"😀","name":"\u5f20\u4e09"}"#,
            "  {\n \"name\" : \"张三\" ,\n \"keep\" : [ 1 , 2.50 , { \"x\" : true } ] , \"secret\" : { \"k\" : 1 } }  ",
            r#"{"customer":"3300000001","name":123456,"secret":[1,2,3]}"#,
            r#"{}"#,
            r#"[]"#,
        ];
        for body in documents {
            let streamed = filter_json(body.as_bytes(), plan).expect(body);
            let parsed: Value = serde_json::from_slice(&streamed)
                .unwrap_or_else(|e| panic!("{body}: {e}: {}", String::from_utf8_lossy(&streamed)));
            assert_eq!(Some(parsed), reference(body), "{body}");
            if !body.contains('\\') && !body.contains(' ') && !body.contains("2.50") {
                let mut document: Value = serde_json::from_str(body).unwrap();
                filter.apply(&mut document, 0);
                assert_eq!(
                    String::from_utf8(streamed).unwrap(),
                    serde_json::to_string(&document).unwrap(),
                    "{body}"
                );
            }
        }
        for broken in [
            r#"{"name":"x""#,
            r#"{"name":"x"} trailing"#,
            r#"{"keep":[1,2}"#,
            r#"{"keep":tru}"#,
            r#"{"name":"x",}"#,
            "{\"keep\":\"\u{1}\"}",
            r#"{"name":"\ud800"}"#,
            r#"{"name":1e400}"#,
            r#"{"keep":01}"#,
        ] {
            assert!(reference(broken).is_none(), "{broken}");
            assert!(filter_json(broken.as_bytes(), plan).is_err(), "{broken}");
        }
        assert!(filter_json(b"{\"keep\":\"\xff\"}", plan).is_err());
        // A repeated key: every copy ruled, none leaks.
        assert_eq!(
            filter_json(
                r#"{"name":"张三","secret":1,"name":"李四","secret":2}"#.as_bytes(),
                plan
            )
            .unwrap(),
            r#"{"name":"张*","name":"李*"}"#.as_bytes()
        );
        // Off the plan, serde_json checks the syntax only: a lone surrogate escape or a number
        // beyond f64 passes as it came (the Value walk refused the whole answer).
        for lenient in [r#"{"keep":"\ud800"}"#, r#"{"keep":1e400}"#] {
            let streamed = filter_json(lenient.as_bytes(), plan).unwrap();
            assert_eq!(streamed, lenient.as_bytes());
        }
    }

    #[test]
    fn drop_wins_inside_masked_objects_and_numbers_become_strings() {
        let filter = FieldFilter::compile(&[
            rule("customer", "mask:customer_no", 3),
            rule("customer.id", "drop", 3),
            rule("customer.phone", "mask:phone", 3),
            rule("[].x", "mask:name", 3),
        ])
        .unwrap();
        let mut doc = json!({"customer": {"id": 1, "no": 3300000001u64, "phone": "13812345678", "ok": true, "n": null}});
        filter.apply(&mut doc, 0);
        assert_eq!(
            doc,
            json!({"customer": {"no": "330****001", "phone": "138****5678", "ok": true, "n": null}})
        );
        let mut list = json!([{"x": "张三"}, {"y": 1}, 5]);
        filter.apply(&mut list, 2);
        assert_eq!(list, json!([{"x": "张*"}, {"y": 1}, 5]));
        assert!(FieldFilter::compile(&[rule("a.[].b", "drop", 1)]).is_err());
        assert!(FieldFilter::compile(&[rule("a[]", "drop", 1)]).is_err());
        assert!(FieldFilter::compile(&[rule("a", "mask:nope", 1)]).is_err());
    }
}
