//! Masks: how a reader granted `masked` sees a protected value.
//!
//! A mask works on characters (Unicode scalar values), never bytes, so
//! `张伟` masks as cleanly as `Alice`. Hidden characters become `*`, one
//! for one, except where a fixed `***` or `****` is written (so the length
//! of that part is not shown).
//!
//! No mask ever shows a whole value: when a value has no more characters
//! than a mask would keep, the mask hides all of them (`last4` on `abc`
//! gives `***`). The empty string masks to itself, except with `redact`,
//! which always gives `****`.
//!
//! | mask         | example                                       |
//! |--------------|-----------------------------------------------|
//! | `email`      | `alice@example.com` → `a***@example.com`      |
//! | `phone`      | `+1 (555) 123-4567` → `+* (***) ***-4567`     |
//! | `last4`      | `4111111111111111` → `************1111`       |
//! | `initial`    | `Alice Smith` → `A*** S***`, `张伟` → `张***` |
//! | `redact`     | anything → `****`                             |
//! | `keep(1,2)`  | `Beijing` → `B****ng`                         |
//!
//! `initial` works word by word (words are separated by whitespace and
//! the whitespace is kept); a one-character word becomes `***`. `email`
//! keeps the domain and the first character of the part before the last
//! `@`; a value that is not `local@domain` becomes `****`. `phone` hides
//! every digit but the last four and keeps `+`, spaces, `-`, `.`, `(` and
//! `)`; any other character is hidden too.
//!
//! A `bytea` column has bytes, not characters: whatever its mask, a masked
//! reader gets the four bytes `****`, as `redact` writes (see `reveal`).

use std::str::FromStr;

use thiserror::Error;

/// Stands for one hidden character.
const HIDDEN: char = '*';
/// What `initial` and `email` write after the character they keep.
const TAIL: &str = "***";
/// What `redact` writes whatever the value.
const REDACTED: &str = "****";
/// How many trailing characters or digits `last4` and `phone` keep.
const LAST: usize = 4;

/// How a masked reader sees a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mask {
    /// First character of the local part, then `***@domain`.
    Email,
    /// Digits hidden but the last four; separators kept.
    Phone,
    /// Every character hidden but the last four.
    Last4,
    /// The first character of each word, then `***`.
    Initial,
    /// Always `****`.
    Redact,
    /// The first `first` and the last `last` characters kept.
    Keep {
        /// Characters kept at the start.
        first: usize,
        /// Characters kept at the end.
        last: usize,
    },
}

/// A mask name that does not parse.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum MaskError {
    #[error(
        "unknown mask {0:?} (expected email, phone, last4, initial, redact or keep(FIRST,LAST))"
    )]
    /// Not one of the masks.
    Unknown(String),
    /// `keep(...)` without two whole numbers.
    #[error("bad mask {0:?}: write keep(FIRST,LAST) with two whole numbers, as in keep(1,2)")]
    BadKeep(String),
}

impl FromStr for Mask {
    type Err = MaskError;

    fn from_str(text: &str) -> Result<Self, MaskError> {
        match text {
            "email" => Ok(Self::Email),
            "phone" => Ok(Self::Phone),
            "last4" => Ok(Self::Last4),
            "initial" => Ok(Self::Initial),
            "redact" => Ok(Self::Redact),
            _ if text.starts_with("keep") => parse_keep(text),
            _ => Err(MaskError::Unknown(text.into())),
        }
    }
}

/// Parses `keep(FIRST,LAST)`; spaces around the numbers are allowed.
fn parse_keep(text: &str) -> Result<Mask, MaskError> {
    let bad = || MaskError::BadKeep(text.into());
    let args = text
        .strip_prefix("keep(")
        .and_then(|rest| rest.strip_suffix(')'))
        .ok_or_else(bad)?;
    let (first, last) = args.split_once(',').ok_or_else(bad)?;
    let number = |n: &str| n.trim().parse::<usize>().map_err(|_| bad());
    Ok(Mask::Keep {
        first: number(first)?,
        last: number(last)?,
    })
}

impl Mask {
    /// The value as a masked reader sees it.
    pub fn apply(&self, value: &str) -> String {
        if value.is_empty() && *self != Self::Redact {
            return String::new();
        }
        match *self {
            Self::Email => email(value),
            Self::Phone => phone(value),
            Self::Last4 => keep(value, 0, LAST),
            Self::Initial => initials(value),
            Self::Redact => REDACTED.into(),
            Self::Keep { first, last } => keep(value, first, last),
        }
    }
}

/// Keeps the first `first` and last `last` characters, hiding the rest one
/// for one; hides everything when that would keep the whole value.
fn keep(value: &str, first: usize, last: usize) -> String {
    let count = value.chars().count();
    if count <= first.saturating_add(last) {
        return hidden(count);
    }
    value
        .chars()
        .enumerate()
        .map(|(i, c)| {
            if i < first || i >= count - last {
                c
            } else {
                HIDDEN
            }
        })
        .collect()
}

/// `count` hidden characters.
fn hidden(count: usize) -> String {
    std::iter::repeat_n(HIDDEN, count).collect()
}

/// The first character and `***`, or only `***` for a single character.
fn initial(word: &str) -> String {
    let mut chars = word.chars();
    match (chars.next(), chars.next()) {
        (Some(first), Some(_)) => format!("{first}{TAIL}"),
        _ => TAIL.into(),
    }
}

/// `initial` for each whitespace-separated word, whitespace kept.
fn initials(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while !rest.is_empty() {
        let word_len = rest.find(char::is_whitespace).unwrap_or(rest.len());
        let (word, after) = rest.split_at(word_len);
        if !word.is_empty() {
            out.push_str(&initial(word));
        }
        let space_len = after
            .find(|c: char| !c.is_whitespace())
            .unwrap_or(after.len());
        out.push_str(&after[..space_len]);
        rest = &after[space_len..];
    }
    out
}

fn email(value: &str) -> String {
    match value.rsplit_once('@') {
        Some((local, domain)) if !local.is_empty() && !domain.is_empty() => {
            format!("{}@{domain}", initial(local))
        }
        _ => REDACTED.into(),
    }
}

/// Characters a phone number may show as they are.
fn is_phone_separator(c: char) -> bool {
    matches!(c, '+' | ' ' | '-' | '.' | '(' | ')')
}

fn phone(value: &str) -> String {
    let digits = value.chars().filter(|c| c.is_numeric()).count();
    let shown_from = if digits > LAST { digits - LAST } else { digits };
    let mut seen = 0;
    value
        .chars()
        .map(|c| {
            if c.is_numeric() {
                seen += 1;
                if seen > shown_from {
                    return c;
                }
                HIDDEN
            } else if is_phone_separator(c) {
                c
            } else {
                HIDDEN
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mask(name: &str, value: &str) -> String {
        name.parse::<Mask>().unwrap().apply(value)
    }

    #[test]
    fn parses_every_mask_name() {
        assert_eq!("email".parse(), Ok(Mask::Email));
        assert_eq!("phone".parse(), Ok(Mask::Phone));
        assert_eq!("last4".parse(), Ok(Mask::Last4));
        assert_eq!("initial".parse(), Ok(Mask::Initial));
        assert_eq!("redact".parse(), Ok(Mask::Redact));
        assert_eq!("keep(1,2)".parse(), Ok(Mask::Keep { first: 1, last: 2 }));
        assert_eq!(
            "keep( 0 , 3 )".parse(),
            Ok(Mask::Keep { first: 0, last: 3 })
        );
    }

    #[test]
    fn rejects_unknown_and_malformed_masks() {
        assert_eq!(
            "hash".parse::<Mask>(),
            Err(MaskError::Unknown("hash".into()))
        );
        assert_eq!(
            "Email".parse::<Mask>(),
            Err(MaskError::Unknown("Email".into()))
        );
        for bad in [
            "keep",
            "keep()",
            "keep(1)",
            "keep(1,2",
            "keep(a,b)",
            "keep(-1,2)",
            "keep(1,2,3)",
            "keep(1,2)x",
        ] {
            assert_eq!(
                bad.parse::<Mask>(),
                Err(MaskError::BadKeep(bad.into())),
                "{bad}"
            );
        }
    }

    #[test]
    fn email_keeps_first_character_and_domain() {
        assert_eq!(mask("email", "alice@example.com"), "a***@example.com");
        assert_eq!(mask("email", "a.b@c@example.com"), "a***@example.com");
        assert_eq!(mask("email", "张伟@例子.中国"), "张***@例子.中国");
    }

    #[test]
    fn email_hides_short_and_malformed_values() {
        assert_eq!(mask("email", "a@example.com"), "***@example.com");
        assert_eq!(mask("email", "not-an-email"), "****");
        assert_eq!(mask("email", "@example.com"), "****");
        assert_eq!(mask("email", "alice@"), "****");
        assert_eq!(mask("email", ""), "");
    }

    #[test]
    fn phone_keeps_last_four_digits_and_separators() {
        assert_eq!(mask("phone", "+1 (555) 123-4567"), "+* (***) ***-4567");
        assert_eq!(mask("phone", "13812345678"), "*******5678");
        assert_eq!(mask("phone", "+86 138.1234.5678"), "+** ***.****.5678");
    }

    #[test]
    fn phone_hides_short_numbers_and_other_characters() {
        assert_eq!(mask("phone", "1234"), "****");
        assert_eq!(mask("phone", "12-3"), "**-*");
        assert_eq!(mask("phone", "555-1234 ext 9"), "***-*234 *** 9");
        assert_eq!(mask("phone", "电话１２３４５"), "***２３４５");
        assert_eq!(mask("phone", ""), "");
    }

    #[test]
    fn last4_keeps_last_four_characters() {
        assert_eq!(mask("last4", "4111111111111111"), "************1111");
        assert_eq!(mask("last4", "11010519491231002X"), "**************002X");
        assert_eq!(mask("last4", "身份证号码一二三四"), "*****一二三四");
        assert_eq!(mask("last4", "abcde"), "*bcde");
    }

    #[test]
    fn last4_hides_values_of_four_characters_or_fewer() {
        assert_eq!(mask("last4", "1234"), "****");
        assert_eq!(mask("last4", "abc"), "***");
        assert_eq!(mask("last4", "张伟"), "**");
        assert_eq!(mask("last4", ""), "");
    }

    #[test]
    fn initial_works_per_word() {
        assert_eq!(mask("initial", "Alice Smith"), "A*** S***");
        assert_eq!(mask("initial", "张伟"), "张***");
        assert_eq!(mask("initial", "欧阳 娜娜"), "欧*** 娜***");
        assert_eq!(mask("initial", " Ann\tLee "), " A***\tL*** ");
    }

    #[test]
    fn initial_hides_one_character_words() {
        assert_eq!(mask("initial", "J"), "***");
        assert_eq!(mask("initial", "王"), "***");
        assert_eq!(mask("initial", "John F Kennedy"), "J*** *** K***");
        assert_eq!(mask("initial", ""), "");
    }

    #[test]
    fn redact_is_always_four_stars() {
        assert_eq!(mask("redact", "1 Main Street"), "****");
        assert_eq!(mask("redact", "北京市朝阳区"), "****");
        assert_eq!(mask("redact", "x"), "****");
        assert_eq!(mask("redact", ""), "****");
    }

    #[test]
    fn keep_keeps_first_and_last_characters() {
        assert_eq!(mask("keep(1,2)", "Beijing"), "B****ng");
        assert_eq!(mask("keep(0,1)", "secret"), "*****t");
        assert_eq!(mask("keep(2,0)", "secret"), "se****");
        assert_eq!(mask("keep(1,1)", "北京市朝阳区"), "北****区");
    }

    #[test]
    fn keep_hides_values_it_would_keep_whole() {
        assert_eq!(mask("keep(1,2)", "abc"), "***");
        assert_eq!(mask("keep(1,2)", "ab"), "**");
        assert_eq!(mask("keep(1,1)", "张伟"), "**");
        assert_eq!(mask("keep(0,0)", "abc"), "***");
        assert_eq!(mask("keep(1,2)", ""), "");
        let huge = Mask::Keep {
            first: usize::MAX,
            last: usize::MAX,
        };
        assert_eq!(huge.apply("abc"), "***");
    }
}
