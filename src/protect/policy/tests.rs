//! The policy's own tests: deciding, loading, and the sample CRM policy.

use super::*;

pub(super) fn roles(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| n.to_string()).collect()
}

/// A column revealing plaintext to `app`, pseudonyms to `analyst` and
/// masked values to `support`, with the given default and purposes.
pub(super) fn column(default: Action, purposes: &[&str]) -> ColumnPolicy {
    ColumnPolicy {
        schema: "public".into(),
        table: "customers".into(),
        column: "email".into(),
        encryption: Encryption::Deterministic,
        mask: Mask::Email,
        reveal: BTreeMap::from([
            ("app".into(), Action::Plaintext),
            ("analyst".into(), Action::Pseudonym),
            ("support".into(), Action::Masked),
            ("blocked".into(), Action::Deny),
        ]),
        default,
        purposes: roles(purposes),
        domain: "public.customers.email".into(),
        approval_rows: None,
        ticket: false,
    }
}

#[test]
fn actions_order_from_least_to_most_revealing() {
    use Action::*;
    assert!(Deny < Null && Null < Masked && Masked < Pseudonym && Pseudonym < Plaintext);
}

#[test]
fn a_matching_role_decides() {
    let c = column(Action::Null, &[]);
    assert_eq!(c.decide(&roles(&["app"]), None, None), Action::Plaintext);
    assert_eq!(c.decide(&roles(&["support"]), None, None), Action::Masked);
    assert_eq!(
        c.decide(&roles(&["analyst"]), None, None),
        Action::Pseudonym
    );
    assert_eq!(c.decide(&roles(&["blocked"]), None, None), Action::Deny);
}

#[test]
fn the_most_revealing_matching_role_wins() {
    let c = column(Action::Null, &[]);
    let r = roles(&["alice", "support", "analyst"]);
    assert_eq!(c.decide(&r, None, None), Action::Pseudonym);
    let r = roles(&["blocked", "support"]);
    assert_eq!(c.decide(&r, None, None), Action::Masked);
    let r = roles(&["support", "app", "blocked"]);
    assert_eq!(c.decide(&r, None, None), Action::Plaintext);
}

#[test]
fn no_matching_role_gets_the_default() {
    let c = column(Action::Masked, &[]);
    assert_eq!(
        c.decide(&roles(&["alice", "sales"]), None, None),
        Action::Masked
    );
    assert_eq!(c.decide(&[], None, None), Action::Masked);
    let c = column(Action::Deny, &[]);
    assert_eq!(
        c.decide(&roles(&["alice"]), Some("kyc"), None),
        Action::Deny
    );
}

#[test]
fn role_names_match_exactly() {
    let c = column(Action::Null, &[]);
    assert_eq!(c.decide(&roles(&["App", "APP"]), None, None), Action::Null);
}

#[test]
fn plaintext_needs_a_listed_purpose() {
    let c = column(Action::Null, &["kyc", "fraud"]);
    let app = roles(&["app"]);
    assert_eq!(c.decide(&app, Some("kyc"), None), Action::Plaintext);
    assert_eq!(c.decide(&app, Some("fraud"), None), Action::Plaintext);
    assert_eq!(c.decide(&app, None, None), Action::Null);
    assert_eq!(c.decide(&app, Some("marketing"), None), Action::Null);
    assert_eq!(c.decide(&app, Some("KYC"), None), Action::Null);
}

#[test]
fn outside_its_purposes_plaintext_falls_to_the_default_capped_at_masked() {
    let app = roles(&["app"]);
    let c = column(Action::Masked, &["kyc"]);
    assert_eq!(c.decide(&app, None, None), Action::Masked);
    let c = column(Action::Pseudonym, &["kyc"]);
    assert_eq!(c.decide(&app, Some("marketing"), None), Action::Masked);
    let c = column(Action::Plaintext, &["kyc"]);
    assert_eq!(c.decide(&roles(&["alice"]), None, None), Action::Masked);
    assert_eq!(
        c.decide(&roles(&["alice"]), Some("kyc"), None),
        Action::Plaintext
    );
    let c = column(Action::Deny, &["kyc"]);
    assert_eq!(c.decide(&app, None, None), Action::Deny);
}

#[test]
fn purposes_do_not_change_other_actions() {
    let c = column(Action::Null, &["kyc"]);
    assert_eq!(
        c.decide(&roles(&["analyst"]), None, None),
        Action::Pseudonym
    );
    assert_eq!(
        c.decide(&roles(&["support"]), Some("x"), None),
        Action::Masked
    );
}

/// Parses several files' texts as one policy.
fn policy(files: &[(&str, &str)]) -> Result<Policy, PolicyError> {
    let mut builder = Builder::default();
    for (name, text) in files {
        builder.add_file(Path::new(name), text)?;
    }
    Ok(builder.finish())
}

/// The location and message of a policy error placed on a line.
fn invalid(result: Result<Policy, PolicyError>) -> (Location, String) {
    let err = result.expect_err("an error");
    let message = err.to_string();
    match err {
        PolicyError::Invalid { at, .. } => (at, message),
        other => panic!("not placed on a line: {other}"),
    }
}

fn at(path: &str, line: usize) -> Location {
    Location {
        path: path.into(),
        line,
    }
}

const NOTES: &str = "[[column]]\ntable = \"crm.notes\"\ncolumn = \"body\"\n";

#[test]
fn a_column_listed_twice_in_one_file_is_an_error() {
    let text = "[[column]]\ntable = \"t\"\ncolumn = \"c\"\n\n\
                [[column]]\ntable = \"public.T\"\ncolumn = \"C\"\n";
    let (location, message) = invalid(Policy::from_str("a.toml", text));
    assert_eq!(location, at("a.toml", 7));
    assert_eq!(
        message,
        "a.toml:7: column public.t.c is already listed at a.toml:3"
    );
}

#[test]
fn a_column_listed_in_two_files_is_an_error() {
    let other = format!("# moved here\n{NOTES}");
    let (location, message) = invalid(policy(&[("a.toml", NOTES), ("b.toml", &other)]));
    assert_eq!(location, at("b.toml", 4));
    assert!(message.contains("crm.notes.body is already listed at a.toml:3"));
}

#[test]
fn a_key_domain_has_one_encryption() {
    let a = "[[column]]\ntable = \"t\"\ncolumn = \"a\"\n\
             encryption = \"deterministic\"\nkey_domain = \"contact\"\n";
    let b = "[[column]]\ntable = \"u\"\ncolumn = \"b\"\nkey_domain = \"contact\"\n";
    let (location, message) = invalid(policy(&[("a.toml", a), ("b.toml", b)]));
    assert_eq!(location, at("b.toml", 3));
    assert!(
        message.contains("key domain \"contact\" is deterministic at a.toml:3"),
        "{message}"
    );
    assert!(message.contains("this column is randomized"), "{message}");
}

#[test]
fn columns_of_one_encryption_share_a_key_domain() {
    let text = "[[column]]\ntable = \"t\"\ncolumn = \"a\"\nkey_domain = \"Contact\"\n\
                [[column]]\ntable = \"u\"\ncolumn = \"b\"\nkey_domain = \"contact\"\n\
                [[column]]\ntable = \"u\"\ncolumn = \"c\"\n";
    let p = Policy::from_str("p.toml", text).unwrap();
    assert_eq!(p.domains(), ["contact", "public.u.c"]);
}

#[test]
fn looks_up_tables_and_columns() {
    let p = policy(&[("a.toml", GOOD), ("b.toml", NOTES)]).unwrap();
    assert!(p.is_protected_table("public", "customers"));
    assert!(p.is_protected_table("crm", "notes"));
    assert!(!p.is_protected_table("public", "notes"));
    assert!(!p.is_protected_table("public", "Customers"));
    assert_eq!(
        p.column("public", "customers", "email").map(|c| c.mask),
        Some(Mask::Email)
    );
    assert!(p.column("public", "customers", "segment").is_none());
    assert!(p.column("crm", "customers", "email").is_none());
    assert_eq!(
        p.tables().collect::<Vec<_>>(),
        [("crm", "notes"), ("public", "customers")]
    );
    let names: Vec<String> = p.columns().map(ColumnPolicy::qualified_name).collect();
    assert_eq!(
        names,
        [
            "crm.notes.body",
            "public.customers.email",
            "public.customers.national_id"
        ]
    );
    let of_customers: Vec<&str> = p
        .columns_of("public", "customers")
        .map(|c| c.column.as_str())
        .collect();
    assert_eq!(of_customers, ["email", "national_id"]);
    assert_eq!(p.columns_of("public", "orders").count(), 0);
    assert_eq!(
        p.domains(),
        [
            "crm.notes.body",
            "public.customers.email",
            "public.customers.national_id"
        ]
    );
}

const GOOD: &str = r#"
[[column]]
table = "public.customers"
column = "email"
encryption = "deterministic"
mask = "email"
reveal = { crm_app = "plaintext", support = "masked" }
default = "masked"

[[column]]
table = "customers"
column = "national_id"
mask = "last4"
reveal = { kyc_officer = "plaintext" }
purposes = ["kyc"]
"#;

#[test]
fn mentions_protected_tables_in_any_spelling() {
    let p = Policy::from_str("p.toml", GOOD).unwrap();
    assert!(p.mentions_protected_table("SELECT * FROM Customers"));
    assert!(p.mentions_protected_table("select email from public.customers"));
    assert!(p.mentions_protected_table("SELECT * FROM \"customers\""));
    assert!(p.mentions_protected_table("UPDATE CUSTOMERS SET segment = 'x'"));
    assert!(!p.mentions_protected_table("select 1"));
    assert!(!p.mentions_protected_table("SELECT amount FROM orders"));
    let empty = Policy::from_str("empty.toml", "").unwrap();
    assert!(!empty.mentions_protected_table("SELECT * FROM customers"));
    assert!(empty.domains().is_empty());
}

#[test]
fn loads_the_toml_files_of_a_directory_in_name_order() {
    let dir = std::env::temp_dir().join(format!("pgveil-policy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("b.toml"), NOTES).unwrap();
    std::fs::write(dir.join("a.toml"), NOTES).unwrap();
    std::fs::write(dir.join("notes.txt"), "not a policy").unwrap();
    let result = Policy::load_dir(&dir);
    std::fs::remove_file(dir.join("a.toml")).unwrap();
    let (location, _) = invalid(result);
    assert_eq!(location, at(dir.join("b.toml").to_str().unwrap(), 3));
    let p = Policy::load_dir(&dir).unwrap();
    assert!(p.is_protected_table("crm", "notes"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn unreadable_files_name_the_path() {
    let missing = PathBuf::from("/nonexistent/pgveil/policy.toml");
    let err = Policy::load(&[missing]).unwrap_err();
    assert!(matches!(err, PolicyError::Read { .. }));
    assert!(err
        .to_string()
        .starts_with("cannot read /nonexistent/pgveil/policy.toml: "));
    let err = Policy::load_dir(Path::new("/nonexistent/pgveil")).unwrap_err();
    assert!(err
        .to_string()
        .starts_with("cannot read /nonexistent/pgveil: "));
}

#[test]
fn the_sample_crm_policy_decides_as_documented() {
    let p = Policy::from_str("crm.toml", include_str!("../../../policies/crm.toml")).unwrap();
    let decide = |column: &str, role: &str, purpose: Option<&str>| {
        p.column("public", "customers", column).unwrap().decide(
            &roles(&["alice", role]),
            purpose,
            None,
        )
    };
    use Action::*;
    for column in ["full_name", "email", "phone", "address"] {
        assert_eq!(decide(column, "crm_app", None), Plaintext, "{column}");
        assert_eq!(decide(column, "support", None), Masked, "{column}");
        assert_eq!(decide(column, "nobody", None), Null, "{column}");
    }
    assert_eq!(decide("email", "analyst", None), Pseudonym);
    assert_eq!(decide("phone", "analyst", None), Pseudonym);
    assert_eq!(decide("full_name", "analyst", None), Null);
    assert_eq!(decide("address", "analyst", None), Null);

    assert_eq!(decide("national_id", "kyc_officer", Some("kyc")), Plaintext);
    assert_eq!(decide("national_id", "crm_app", Some("kyc")), Plaintext);
    assert_eq!(decide("national_id", "kyc_officer", None), Null);
    assert_eq!(decide("national_id", "crm_app", Some("marketing")), Null);
    assert_eq!(decide("national_id", "support", Some("kyc")), Masked);
    assert_eq!(decide("national_id", "analyst", Some("kyc")), Null);

    let column = |name: &str| p.column("public", "customers", name).unwrap();
    assert_eq!(column("email").encryption, Encryption::Deterministic);
    assert_eq!(column("phone").encryption, Encryption::Deterministic);
    assert_eq!(column("national_id").encryption, Encryption::Randomized);
    assert_eq!(
        column("national_id").mask.apply("110105194912310021"),
        "**************0021"
    );
    assert!(p.column("public", "customers", "segment").is_none());
    assert!(!p.is_protected_table("public", "orders"));
    assert_eq!(p.domains().len(), 5);
}

#[test]
fn without_purposes_any_purpose_is_allowed() {
    let c = column(Action::Null, &[]);
    assert!(c.allows_purpose(None));
    assert!(c.allows_purpose(Some("anything")));
    assert_eq!(
        c.decide(&roles(&["app"]), Some("x"), None),
        Action::Plaintext
    );
}

#[test]
fn a_ticket_bound_column_shows_plaintext_only_under_a_ticket() {
    let mut c = column(Action::Masked, &[]);
    c.ticket = true;
    let app = roles(&["app"]);
    assert_eq!(c.decide(&app, None, Some("CASE-123")), Action::Plaintext);
    assert_eq!(c.decide(&app, None, None), Action::Masked);
    c.default = Action::Pseudonym;
    assert_eq!(
        c.decide(&app, None, None),
        Action::Masked,
        "capped at masked"
    );
    c.default = Action::Null;
    assert_eq!(c.decide(&app, None, None), Action::Null);
    assert_eq!(
        c.decide(&roles(&["analyst"]), None, None),
        Action::Pseudonym,
        "tickets do not change the other actions"
    );
    c.purposes = roles(&["kyc"]);
    assert_eq!(c.decide(&app, Some("kyc"), None), Action::Null);
    assert_eq!(c.decide(&app, None, Some("T-1")), Action::Null);
    assert_eq!(c.decide(&app, Some("kyc"), Some("T-1")), Action::Plaintext);
}

#[test]
fn tickets_and_approvals_are_read_from_the_file() {
    let text = "[[column]]\ntable = \"t\"\ncolumn = \"c\"\nticket = true\n\
                approval = { rows = 1000 }\nreveal = { support = \"plaintext\", x = \"masked\" }\n\
                [[column]]\ntable = \"t\"\ncolumn = \"d\"\n";
    let p = Policy::from_str("p.toml", text).unwrap();
    let c = p.column("public", "t", "c").unwrap();
    assert!(c.ticket);
    assert_eq!(c.approval_rows, Some(1000));
    let r = roles(&["x", "support", "y"]);
    assert_eq!(c.plaintext_roles(&r), ["support"]);
    let d = p.column("public", "t", "d").unwrap();
    assert!(!d.ticket);
    assert_eq!(d.approval_rows, None);
    for bad in [
        "approval = { rows = -1 }",
        "approval = { row = 5 }",
        "approval = 5",
        "ticket = \"yes\"",
    ] {
        let text = format!("[[column]]\ntable = \"t\"\ncolumn = \"c\"\n{bad}\n");
        let err = Policy::from_str("p.toml", &text).unwrap_err().to_string();
        assert!(err.starts_with("p.toml:4: "), "{bad}: {err}");
    }
}
