//! Masks by kind (脱敏), as gridgate/pii.py writes them: the field rules' ``mask:<kind>``.
//!
//! Lengths count characters (code points), as Python's ``len`` does.

use std::sync::LazyLock;

use regex::Regex;

static SEPARATORS: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"[\s\-]+").unwrap());
const CJK: &str = r"[\x{3400}-\x{4dbf}\x{4e00}-\x{9fff}]";
static ADMIN_PREFIX: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(&format!(
        r"^(?:{CJK}{{1,7}}?(?:省|自治区))?(?:{CJK}{{1,9}}?(?:市|自治州|州|盟|地区))?{CJK}{{1,7}}?[区县旗市]"
    ))
    .unwrap()
});
const ADDRESS_FALLBACK: usize = 6;
const ADDRESS_TAIL: &str = "****";

/// A mask kind of ``mask:<kind>``.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mask {
    Name,
    Phone,
    IdNumber,
    Address,
    CustomerNo,
    BankCard,
    Email,
}

impl Mask {
    /// The kind named ``name``.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "name" => Mask::Name,
            "phone" => Mask::Phone,
            "id_number" => Mask::IdNumber,
            "address" => Mask::Address,
            "customer_no" => Mask::CustomerNo,
            "bank_card" => Mask::BankCard,
            "email" => Mask::Email,
            _ => return None,
        })
    }

    /// ``value`` masked.
    pub fn apply(self, value: &str) -> String {
        match self {
            Mask::Name => mask_name(value),
            Mask::Phone => keep_ends(&compact(value), 3, 4, 11),
            Mask::IdNumber => keep_ends(&compact(value), 3, 4, 18),
            Mask::CustomerNo => keep_ends(&compact(value), 3, 3, 10),
            Mask::BankCard => keep_ends(&compact(value), 0, 4, 12),
            Mask::Email => mask_email(value),
            Mask::Address => mask_address(value),
        }
    }
}

fn compact(value: &str) -> Vec<char> {
    SEPARATORS.replace_all(value, "").chars().collect()
}

fn keep_ends(value: &[char], head: usize, tail: usize, full_length: usize) -> String {
    let (mut head, mut tail) = (head, tail);
    if value.len() < full_length {
        head = head.min(value.len() / 4);
        tail = tail.min(value.len() / 4);
    }
    let hidden = value.len() - head - tail;
    let mut out: String = value[..head].iter().collect();
    out.extend(std::iter::repeat_n('*', hidden));
    out.extend(&value[value.len() - tail..]);
    out
}

/// Python's ``str.strip()``: Unicode whitespace at both ends.
fn strip(value: &str) -> &str {
    value.trim_matches(|c: char| c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c))
}

fn mask_name(value: &str) -> String {
    let name: Vec<char> = strip(value).chars().collect();
    if name.len() <= 1 {
        return "*".repeat(name.len());
    }
    let mut out = String::new();
    out.push(name[0]);
    out.extend(std::iter::repeat_n('*', name.len() - 1));
    out
}

fn mask_local_part(local: &str) -> String {
    let mut chars = local.chars();
    let first = chars.next();
    match first {
        Some(c) if local.chars().count() > 1 && c != '*' => format!("{c}***"),
        _ => "***".to_owned(),
    }
}

fn mask_email(value: &str) -> String {
    let address = strip(value);
    if address.is_empty() {
        return String::new();
    }
    match address.rsplit_once('@') {
        None => mask_local_part(address),
        Some((local, domain)) => format!("{}@{domain}", mask_local_part(local)),
    }
}

fn is_cjk(c: char) -> bool {
    ('\u{3400}'..='\u{4dbf}').contains(&c) || ('\u{4e00}'..='\u{9fff}').contains(&c)
}

fn mask_address(value: &str) -> String {
    let address = strip(value);
    if address.is_empty() {
        return String::new();
    }
    if let Some(found) = ADMIN_PREFIX.find(address) {
        return format!("{}{ADDRESS_TAIL}", found.as_str());
    }
    let limit = ADDRESS_FALLBACK.min(address.chars().count() / 2);
    let kept: String = address
        .chars()
        .take(limit)
        .take_while(|c| is_cjk(*c))
        .collect();
    kept + ADDRESS_TAIL
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_as_pii_py_documents_them() {
        assert_eq!(Mask::Name.apply("张三"), "张*");
        assert_eq!(Mask::Name.apply("欧阳娜娜"), "欧***");
        assert_eq!(Mask::Name.apply("Z"), "*");
        assert_eq!(Mask::Phone.apply("13812345678"), "138****5678");
        assert_eq!(Mask::Phone.apply("138-1234-5678"), "138****5678");
        assert_eq!(
            Mask::IdNumber.apply("330106199001011234"),
            "330***********1234"
        );
        assert_eq!(Mask::CustomerNo.apply("3300000001"), "330****001");
        assert_eq!(Mask::CustomerNo.apply("12345678"), "12****78");
        assert_eq!(Mask::BankCard.apply("6222000011111234"), "************1234");
        assert_eq!(Mask::Email.apply("zhang@example.com"), "z***@example.com");
        assert_eq!(Mask::Email.apply("z@example.com"), "***@example.com");
        assert_eq!(
            Mask::Address.apply("浙江省杭州市西湖区文三路 90 号"),
            "浙江省杭州市西湖区****"
        );
        assert_eq!(
            Mask::Address.apply("杭州市西湖区某街道"),
            "杭州市西湖区****"
        );
        assert_eq!(Mask::Address.apply("某某街道一号楼"), "某某街****");
        assert_eq!(Mask::Address.apply("90 Main St"), "****");
    }
}
