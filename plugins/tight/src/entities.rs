//! Tight's ENTITY_UPDATE entities and the resource each one is fetched from
//! (seed 000's table), and the mapping from a webhook's `url` back to an entity.

/// (entity, resource path) as Tight documents them.
pub const ENTITIES: [(&str, &str); 24] = [
    ("attachment", "/attachments"),
    ("bankAccount", "/bankAccounts"),
    ("bankTransfer", "/bankTransfers"),
    ("business", "/businesses"),
    ("client", "/clients"),
    ("expense", "/expenses"),
    ("expenseCategory", "/expenses/categories"),
    ("expenseRule", "/expenses/rules"),
    ("glAccount", "/glAccounts"),
    ("glEntry", "/glEntries"),
    ("integration", "/integrations"),
    ("invoice", "/invoices"),
    ("invoiceSetup", "/invoiceSetup"),
    ("manualJournalEntry", "/manualJournalEntries"),
    ("payment", "/payments"),
    ("personalExpenseCategory", "/expenses/personalCategories"),
    ("revenue", "/revenues"),
    ("revenueRule", "/revenueRules"),
    ("task", "/tasks"),
    ("taxEstimates", "/taxEstimates"),
    ("taxPayment", "/taxPayments"),
    ("time", "/times"),
    ("userTaxSetup", "/userTaxSetup"),
    ("vendor", "/vendors"),
];

/// The resource path of a known entity; for an unknown one, `/<entity>s`.
pub fn resource_for_entity(entity: &str) -> String {
    ENTITIES
        .iter()
        .find(|(e, _)| *e == entity)
        .map(|(_, r)| r.to_string())
        .unwrap_or_else(|| format!("/{entity}s"))
}

/// Maps an ENTITY_UPDATE `url` (e.g. `/v6/invoices/inv_1`) to (entity, resource).
///
/// The API version segment (`v6`) and the trailing id are dropped; what is left
/// is looked up in the table. A path the table does not know (the docs' own
/// sample, `/v6/banks/transactions/btn_…`, is one) is named by singularizing
/// and camel-casing its segments: `banks/transactions` → `bankTransaction`.
pub fn entity_for_url(url: &str) -> (String, String) {
    let path = url.split(['?', '#']).next().unwrap_or("");
    let mut segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    if segments.first().is_some_and(|s| {
        s.len() > 1 && s.starts_with('v') && s[1..].bytes().all(|b| b.is_ascii_digit())
    }) {
        segments.remove(0);
    }
    // Try the longest prefix first, so `/expenses/categories/x` is expenseCategory.
    for end in (1..=segments.len()).rev() {
        let resource = format!("/{}", segments[..end].join("/"));
        if let Some((entity, _)) = ENTITIES.iter().find(|(_, r)| *r == resource) {
            return (entity.to_string(), resource);
        }
    }
    // Unknown path: drop the id (the last segment when there are several).
    if segments.len() > 1 {
        segments.pop();
    }
    if segments.is_empty() {
        return ("unknown".into(), "/".into());
    }
    let resource = format!("/{}", segments.join("/"));
    let mut entity = String::new();
    for (i, seg) in segments.iter().enumerate() {
        let single = singular(seg);
        if i == 0 {
            entity.push_str(&single);
        } else {
            let mut chars = single.chars();
            if let Some(c) = chars.next() {
                entity.extend(c.to_uppercase());
                entity.push_str(chars.as_str());
            }
        }
    }
    (entity, resource)
}

fn singular(word: &str) -> String {
    if let Some(stem) = word.strip_suffix("ies") {
        format!("{stem}y")
    } else if let Some(stem) = word.strip_suffix("sses") {
        format!("{stem}ss")
    } else if word.ends_with("ss") {
        word.to_string()
    } else if let Some(stem) = word.strip_suffix('s') {
        stem.to_string()
    } else {
        word.to_string()
    }
}
