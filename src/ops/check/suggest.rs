//! "Did you mean ...?": the existing name nearest to a misspelt one.

/// The candidate closest to `name` by edit distance, if it is close enough
/// to be a likely typo: at most a third of the longer name's length, and
/// at least one edit away.
pub(super) fn nearest<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|candidate| (strsim::damerau_levenshtein(name, candidate), candidate))
        .filter(|&(distance, candidate)| {
            distance > 0 && distance * 3 <= name.chars().count().max(candidate.chars().count())
        })
        .min_by_key(|&(distance, candidate)| (distance, candidate))
        .map(|(_, candidate)| candidate)
}

/// `"; did you mean X?"` when a near name exists, else nothing.
pub(super) fn did_you_mean<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> String {
    nearest(name, candidates)
        .map(|near| format!("; did you mean {near}?"))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typos_find_their_name_and_strangers_find_none() {
        let columns = ["id", "full_name", "email", "phone", "national_id"];
        assert_eq!(nearest("emial", columns), Some("email"));
        assert_eq!(nearest("phnoe", columns), Some("phone"));
        assert_eq!(nearest("nationalid", columns), Some("national_id"));
        assert_eq!(nearest("salary", columns), None);
        assert_eq!(nearest("email", columns), None, "not a typo of itself");
        assert_eq!(nearest("crm_ap", ["crm_app", "support"]), Some("crm_app"));
        assert_eq!(
            did_you_mean("customer", ["customers", "orders"]),
            "; did you mean customers?"
        );
    }
}
