//! Generators of SQL text for the statement properties: a small grammar
//! of the statements pgveil reads (INSERT, UPDATE, SELECT, DELETE, COPY,
//! SET, PREPARE, EXECUTE, DO, transaction control), with protected and
//! unprotected columns of the sample policy, every literal form, comments
//! and quoted identifiers between tokens, and character noise on top.

use proptest::prelude::*;
use proptest::sample::select;

/// Characters values are made of: quotes, backslashes, dollars, comment
/// and statement delimiters, and non-ASCII text (乗 is `81 5C` in GBK,
/// 許 `B3 5C` in BIG5, ソ `83 5C` in SJIS: a second byte that is a
/// backslash).
const VALUE_CHARS: &[char] = &[
    'a', 'b', 'z', 'A', 'Q', '0', '7', ' ', '\'', '\'', '\\', '\\', '"', '$', ';', '-', '/', '*',
    '%', '_', '\n', '\t', '中', '文', '乗', '許', 'ソ', 'é', '€', '😀', 'x', '{', '}', ',', '&',
];

/// Text that looks like pgveil ciphertext or `bytea` input.
const SPECIAL_VALUES: &[&str] = &[
    "pgv1:UFYBAQAAAAEAAAAB",
    "pgv1:",
    r"\x0102ff",
    r"\\x41",
    "$$",
    "$t$",
    "*/",
    "/*",
    "--",
    "''",
    r"\'",
    "",
];

/// A plaintext value.
pub(crate) fn value_text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => proptest::collection::vec(select(VALUE_CHARS), 0..12)
            .prop_map(|chars| chars.into_iter().collect::<String>()),
        1 => select(SPECIAL_VALUES).prop_map(str::to_owned),
    ]
}

/// `text` as a plain `'...'` literal, as read with standard strings on.
pub(crate) fn plain(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// `text` as an `E'...'` literal.
pub(crate) fn escaped(text: &str) -> String {
    format!("E'{}'", text.replace('\\', r"\\").replace('\'', r"\'"))
}

/// `text` as a `U&'...'` literal, non-ASCII characters as escapes.
pub(crate) fn unicode(text: &str) -> String {
    let mut out = String::from("U&'");
    for c in text.chars() {
        match c {
            '\\' => out.push_str(r"\\"),
            '\'' => out.push_str("''"),
            c if c.is_ascii() => out.push(c),
            c if (c as u32) <= 0xffff => out.push_str(&format!("\\{:04X}", c as u32)),
            c => out.push_str(&format!("\\+{:06X}", c as u32)),
        }
    }
    out.push('\'');
    out
}

/// `text` dollar-quoted, with a tag it does not contain.
pub(crate) fn dollar(text: &str) -> String {
    let mut tag = String::from("$$");
    while text.contains(&tag) || text.ends_with('$') && tag == "$$" {
        tag.insert(tag.len() - 1, 'q');
    }
    format!("{tag}{text}{tag}")
}

/// A literal whose value is `text`, in any form.
pub(crate) fn literal_of(text: String) -> impl Strategy<Value = String> {
    let forms: Vec<fn(&str) -> String> = vec![
        plain,
        escaped,
        unicode,
        dollar,
        |t| format!("N{}", plain(t)),
        |t| format!("{}::text", plain(t)),
        |t| format!("{}\n{}", plain(""), plain(t)),
        // Not what the value means under every setting: a backslash
        // before a quote ends nowhere with standard strings off.
        |t| format!("'{t}'"),
    ];
    select(forms).prop_map(move |form| form(&text))
}

/// Any literal, including bit strings.
pub(crate) fn literal() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => value_text().prop_flat_map(literal_of),
        1 => select(vec!["B'0101'", "X'ff'", "b'1'", "x'0A'", "B'0''1'"]).prop_map(str::to_owned),
        1 => Just("'{a,\"b\\\\\",NULL}'".to_owned()),
    ]
}

fn table() -> impl Strategy<Value = &'static str> {
    select(vec![
        "customers",
        "public.customers",
        "\"customers\"",
        "public.\"customers\"",
        "CUSTOMERS",
        "orders",
        "customer_notes",
        "crm.contacts",
        "\"Customers\"",
        "(select * from customers) s",
    ])
}

fn column() -> impl Strategy<Value = &'static str> {
    select(vec![
        "email",
        "full_name",
        "phone",
        "national_id",
        "address",
        "\"email\"",
        "EMAIL",
        "customers.email",
        "segment",
        "id",
        "\"Email\"",
        "note",
        "amount",
        "created_at",
        "*",
    ])
}

fn param() -> impl Strategy<Value = String> {
    (1..12u8).prop_map(|n| format!("${n}"))
}

/// A value expression.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => literal(),
        2 => param(),
        1 => select(vec!["NULL", "DEFAULT", "1", "-1.5e3", "now()"]).prop_map(str::to_owned),
        1 => proptest::collection::vec(literal(), 0..3)
            .prop_map(|items| format!("ARRAY[{}]", items.join(", "))),
        1 => (param(), select(vec!["text", "text[]", "bytea", "int"]))
            .prop_map(|(p, t)| format!("{p}::{t}")),
        1 => literal().prop_map(|l| format!("lower({l})")),
        1 => column().prop_map(str::to_owned),
    ]
}

fn condition() -> impl Strategy<Value = String> {
    let simple = prop_oneof![
        (
            column(),
            select(vec!["=", "<>", "<", ">=", "LIKE", "IS DISTINCT FROM"]),
            value()
        )
            .prop_map(|(c, op, v)| format!("{c} {op} {v}")),
        (column(), proptest::collection::vec(value(), 1..3))
            .prop_map(|(c, vs)| format!("{c} IN ({})", vs.join(", "))),
        (column(), value()).prop_map(|(c, v)| format!("{c} = ANY({v})")),
        column().prop_map(|c| format!("{c} IS NULL")),
        (column(), column(), table(), column(), value())
            .prop_map(|(a, b, t, c, v)| format!("{a} = (SELECT {b} FROM {t} WHERE {c} = {v})")),
    ];
    proptest::collection::vec(simple, 1..3).prop_map(|cs| cs.join(" AND "))
}

fn columns() -> impl Strategy<Value = Vec<&'static str>> {
    proptest::collection::vec(column(), 1..4)
}

fn insert() -> impl Strategy<Value = String> {
    (
        table(),
        prop::option::of(columns()),
        proptest::collection::vec(proptest::collection::vec(value(), 1..4), 1..3),
        select(vec![
            "",
            " RETURNING id",
            " ON CONFLICT (id) DO UPDATE SET email = EXCLUDED.email",
            " ON CONFLICT DO NOTHING",
        ]),
    )
        .prop_map(|(t, cols, rows, tail)| {
            let cols = cols.map_or(String::new(), |c| format!(" ({})", c.join(", ")));
            let rows: Vec<String> = rows.iter().map(|r| format!("({})", r.join(", "))).collect();
            format!("INSERT INTO {t}{cols} VALUES {}{tail}", rows.join(", "))
        })
}

fn update() -> impl Strategy<Value = String> {
    (
        table(),
        proptest::collection::vec((column(), value()), 1..3),
        prop::option::of(condition()),
    )
        .prop_map(|(t, sets, cond)| {
            let sets: Vec<String> = sets.iter().map(|(c, v)| format!("{c} = {v}")).collect();
            let cond = cond.map_or(String::new(), |c| format!(" WHERE {c}"));
            format!("UPDATE {t} SET {}{cond}", sets.join(", "))
        })
}

fn select_statement() -> impl Strategy<Value = String> {
    (
        columns(),
        table(),
        prop::option::of(condition()),
        select(vec!["", " ORDER BY email", " GROUP BY phone", " LIMIT 3"]),
    )
        .prop_map(|(cols, t, cond, tail)| {
            let cond = cond.map_or(String::new(), |c| format!(" WHERE {c}"));
            format!("SELECT {} FROM {t}{cond}{tail}", cols.join(", "))
        })
}

fn other() -> impl Strategy<Value = String> {
    prop_oneof![
        (
            table(),
            prop::option::of(columns()),
            select(vec!["", " WITH (FORMAT csv)", " (FORMAT binary)"])
        )
            .prop_map(|(t, cols, with)| {
                let cols = cols.map_or(String::new(), |c| format!(" ({})", c.join(", ")));
                format!("COPY {t}{cols} FROM STDIN{with}")
            }),
        select_statement().prop_map(|s| format!("COPY ({s}) TO STDOUT")),
        (table(), condition()).prop_map(|(t, c)| format!("DELETE FROM {t} WHERE {c}")),
        literal().prop_map(|l| format!("SET pgveil.purpose = {l}")),
        literal().prop_map(|l| format!("SELECT set_config('pgveil.actor', {l}, false)")),
        select(vec!["on", "off", "'off'"])
            .prop_map(|v| format!("SET standard_conforming_strings = {v}")),
        select(vec!["GBK", "'BIG5'", "UTF8", "SJIS"])
            .prop_map(|v| format!("SET client_encoding = {v}")),
        (0..3u8, insert()).prop_map(|(n, i)| format!("PREPARE p{n} (text, text, text) AS {i}")),
        (0..3u8, proptest::collection::vec(value(), 0..3))
            .prop_map(|(n, vs)| format!("EXECUTE p{n}({})", vs.join(", "))),
        (0..3u8).prop_map(|n| format!("DEALLOCATE p{n}")),
        insert().prop_map(|i| format!("DO $body$ BEGIN {i}; END $body$")),
        select(vec![
            "DISCARD ALL",
            "BEGIN",
            "COMMIT",
            "SAVEPOINT a",
            "ROLLBACK TO a",
            "RESET ALL",
            "SHOW ALL",
        ])
        .prop_map(str::to_owned),
    ]
}

/// One statement of the grammar.
pub(crate) fn statement() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => insert(),
        2 => update(),
        2 => select_statement(),
        2 => other(),
    ]
}

/// What goes between two tokens.
const SEPARATORS: &[&str] = &[
    " ",
    "\n",
    "\t",
    " /* c */ ",
    "/* a /* nested ' */ b */",
    " -- x '\n",
    "/**/",
    "\r\n",
];

/// Statements joined by `;`, each space possibly a comment.
pub(crate) fn text() -> impl Strategy<Value = String> {
    (
        proptest::collection::vec(statement(), 1..4),
        proptest::collection::vec(select(SEPARATORS), 0..8),
        any::<bool>(),
    )
        .prop_map(|(statements, separators, trailing)| {
            let mut sql = statements.join("; ");
            for (i, sep) in separators.into_iter().enumerate() {
                // Replace the i-th space, counting from a moving start.
                let spaces: Vec<usize> = sql.match_indices(' ').map(|(p, _)| p).collect();
                if let Some(&at) = spaces.get(i * 3 % spaces.len().max(1)) {
                    sql.replace_range(at..at + 1, sep);
                }
            }
            if trailing {
                sql.push(';');
            }
            sql
        })
}

/// Characters noise is made of.
const NOISE: &[char] = &[
    '\'', '"', '\\', '$', '/', '*', '-', '\n', '(', ')', ';', ',', 'E', 'U', '&', 'e', 'n', 'x',
    'b', '1', ' ', '中', '\u{0}', '\u{7f}', '乗', ':',
];

/// An edit of a text: insert a character, delete or repeat a span.
#[derive(Clone, Debug)]
pub(crate) enum Edit {
    Insert(usize, char),
    Delete(usize, usize),
    Repeat(usize, usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        3 => (any::<usize>(), select(NOISE)).prop_map(|(at, c)| Edit::Insert(at, c)),
        1 => (any::<usize>(), 1..6usize).prop_map(|(at, n)| Edit::Delete(at, n)),
        1 => (any::<usize>(), 1..12usize).prop_map(|(at, n)| Edit::Repeat(at, n)),
    ]
}

/// `text` with `edits` applied, character by character.
pub(crate) fn apply(text: &str, edits: &[Edit]) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for edit in edits {
        let len = chars.len();
        match *edit {
            Edit::Insert(at, c) => chars.insert(at % (len + 1), c),
            Edit::Delete(at, n) if len > 0 => {
                let at = at % len;
                chars.drain(at..(at + n).min(len));
            }
            Edit::Repeat(at, n) if len > 0 => {
                let at = at % len;
                let span: Vec<char> = chars[at..(at + n).min(len)].to_vec();
                chars.splice(at..at, span);
            }
            _ => {}
        }
    }
    chars.into_iter().collect()
}

/// Generated statements with noise, or any text at all.
pub(crate) fn noisy_text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => text(),
        4 => (text(), proptest::collection::vec(edit(), 1..6))
            .prop_map(|(sql, edits)| apply(&sql, &edits)),
        1 => any::<String>(),
        1 => proptest::collection::vec(select(NOISE), 0..24)
            .prop_map(|cs| cs.into_iter().collect()),
    ]
}

/// A statement that writes or compares values marked `SECRET<n>` only
/// where a protected column of the sample policy takes them.
pub(crate) fn marked() -> impl Strategy<Value = String> {
    let target = || {
        select(vec![
            "email",
            "\"email\"",
            "EMAIL",
            "phone",
            "full_name",
            "address",
            "national_id",
        ])
    };
    let secret = || {
        (0..1000u32, value_text()).prop_flat_map(|(n, rest)| literal_of(format!("SECRET{n}{rest}")))
    };
    let table = || {
        select(vec![
            "customers",
            "public.customers",
            "\"customers\"",
            "public.\"customers\"",
            "PUBLIC.Customers",
        ])
    };
    prop_oneof![
        (table(), proptest::collection::vec((target(), secret()), 1..4), literal()).prop_map(
            |(t, pairs, other)| {
                let (cols, vals): (Vec<_>, Vec<_>) = pairs.into_iter().unzip();
                format!(
                    "INSERT INTO {t} ({}, segment) VALUES ({}, {other})",
                    cols.join(", "),
                    vals.join(", ")
                )
            }
        ),
        (table(), target(), secret(), target(), secret()).prop_map(|(t, a, x, b, y)| {
            format!("UPDATE {t} SET {a} = {x} WHERE {b} = {y}")
        }),
        (table(), target(), secret(), secret(), select(vec!["=", "<>", "IN", "LIKE", ">"]))
            .prop_map(|(t, c, x, y, op)| match op {
                "IN" => format!("SELECT id FROM {t} WHERE {c} IN ({x}, {y})"),
                op => format!("SELECT id FROM {t} WHERE {c} {op} {x} OR {c} = {y}"),
            }),
        (target(), secret()).prop_map(|(c, x)| {
            format!("PREPARE q (text) AS INSERT INTO customers ({c}, segment) VALUES ($1, 'x'); EXECUTE q({x})")
        }),
    ]
}
