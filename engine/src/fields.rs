//! Fields: drop or mask parts of a JSON answer by the caller's level (permissions/fields.py).
//!
//! Rules compile once per snapshot into one plan (a trie) per level; filtering an answer is
//! one walk over the ruled keys only. Answers with no rule for the level, and answers that
//! are not JSON, pass through unparsed.

use std::collections::HashMap;

use serde_json::Value;

use crate::errors::GatewayError;
use crate::pii::Mask;

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
    plans: HashMap<u8, Node>,
}

impl FieldFilter {
    /// The rules compiled into one plan per level.
    pub fn compile(rules: &[FieldRule]) -> Result<Self, String> {
        let mut plans: HashMap<u8, Node> = HashMap::new();
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
        let mut compiled = HashMap::new();
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
pub fn filter_body(
    body: &[u8],
    content_type: Option<&[u8]>,
    filter: &FieldFilter,
    level: u8,
) -> Result<Option<Vec<u8>>, GatewayError> {
    if body.is_empty() || !filter.applies(level) || !is_json(content_type) {
        return Ok(None);
    }
    let mut document: Value = serde_json::from_slice(body).map_err(|_| {
        // Passing it on raw would leak exactly the fields the rules are there to hide.
        GatewayError::UpstreamBadResponse(
            "the business system's answer claims to be JSON but does not parse".into(),
        )
    })?;
    filter.apply(&mut document, level);
    Ok(Some(
        serde_json::to_vec(&document).map_err(|_| GatewayError::Internal)?,
    ))
}

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
