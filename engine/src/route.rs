//! Route: method + raw path → interface and path parameters (gateway/snapshot.py ``Router``).
//!
//! A segment trie: literal segments first, then one parameter child per level, with the same
//! backtracking order as the Python router, so both route every path alike.

use crate::snapshot::FastMap;

/// What routing found.
#[derive(Debug, PartialEq, Eq)]
pub enum Routed<'a> {
    /// The interface (an index into the snapshot's interfaces) and the parameters.
    Found(usize, Vec<(&'a str, String)>),
    /// The path exists for other methods only.
    WrongMethod,
    /// No interface at this path.
    Unknown,
}

#[derive(Default, Debug)]
struct Node {
    literal: FastMap<String, Node>,
    param: Option<Box<Node>>,
    by_method: FastMap<String, usize>,
    param_names: FastMap<String, Vec<String>>,
}

/// The routing table of one snapshot.
#[derive(Default, Debug)]
pub struct Router {
    root: Node,
}

fn segments(path: &str) -> Vec<&str> {
    if path == "/" {
        Vec::new()
    } else {
        path[1..].split('/').collect()
    }
}

impl Router {
    /// Add the interface ``index`` served at ``method`` and the template ``path``.
    pub fn insert(&mut self, method: &str, template: &str, index: usize) {
        let mut node = &mut self.root;
        let mut names = Vec::new();
        for segment in segments(template) {
            if segment.starts_with('{') && segment.ends_with('}') {
                names.push(segment[1..segment.len() - 1].to_owned());
                node = node.param.get_or_insert_with(Default::default);
            } else {
                node = node.literal.entry(segment.to_owned()).or_default();
            }
        }
        node.by_method.insert(method.to_owned(), index);
        node.param_names.insert(method.to_owned(), names);
    }

    /// The interface for ``method`` at the raw ``path``.
    pub fn route<'a>(&'a self, method: &str, path: &str) -> Routed<'a> {
        if !path.starts_with('/') {
            return Routed::Unknown;
        }
        let parts = segments(path);
        let mut values: Vec<&str> = Vec::new();
        // The common case without backtracking first: a literal where there is one, else the
        // parameter. That is the path the full search would find first.
        let mut node = Some(&self.root);
        for segment in &parts {
            let Some(current) = node else { break };
            node = match current.literal.get(*segment) {
                Some(child) => Some(child),
                None => match &current.param {
                    Some(child) if !segment.is_empty() => {
                        values.push(segment);
                        Some(child)
                    }
                    _ => None,
                },
            };
        }
        let found = match node {
            Some(found) if !found.by_method.is_empty() => Some(found),
            _ => {
                values.clear();
                walk(&self.root, &parts, 0, &mut values)
            }
        };
        let Some(found) = found else {
            return Routed::Unknown;
        };
        let Some(&index) = found.by_method.get(method) else {
            return Routed::WrongMethod;
        };
        let names = &found.param_names[method];
        let params = names
            .iter()
            .map(String::as_str)
            .zip(values.into_iter().map(str::to_owned))
            .collect();
        Routed::Found(index, params)
    }
}

fn walk<'t, 'p>(
    node: &'t Node,
    parts: &[&'p str],
    index: usize,
    values: &mut Vec<&'p str>,
) -> Option<&'t Node> {
    if index == parts.len() {
        return (!node.by_method.is_empty()).then_some(node);
    }
    let segment = parts[index];
    if let Some(child) = node.literal.get(segment)
        && let Some(found) = walk(child, parts, index + 1, values)
    {
        return Some(found);
    }
    if let Some(child) = &node.param
        && !segment.is_empty()
    {
        values.push(segment);
        if let Some(found) = walk(child, parts, index + 1, values) {
            return Some(found);
        }
        values.pop();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router() -> Router {
        let mut router = Router::default();
        router.insert("GET", "/api/v1/customers/{customer_no}", 0);
        router.insert("GET", "/api/v1/customers/{customer_no}/bills", 1);
        router.insert("GET", "/api/v1/customers/me/bills/{month}", 2);
        router.insert("POST", "/api/v1/payments", 3);
        router
    }

    #[test]
    fn routes_literals_parameters_and_backtracks() {
        let router = router();
        assert_eq!(
            router.route("GET", "/api/v1/customers/3300000001/bills"),
            Routed::Found(1, vec![("customer_no", "3300000001".to_owned())])
        );
        // "me" is a literal child, but only the parameter branch has /bills as an interface.
        assert_eq!(
            router.route("GET", "/api/v1/customers/me/bills"),
            Routed::Found(1, vec![("customer_no", "me".to_owned())])
        );
        assert_eq!(
            router.route("GET", "/api/v1/customers/me/bills/2026-10"),
            Routed::Found(2, vec![("month", "2026-10".to_owned())])
        );
        assert_eq!(router.route("GET", "/api/v1/payments"), Routed::WrongMethod);
        assert_eq!(
            router.route("GET", "/api/v1/customers//bills"),
            Routed::Unknown
        );
        assert_eq!(router.route("GET", "/nope"), Routed::Unknown);
        assert_eq!(router.route("GET", "nope"), Routed::Unknown);
    }
}
