use serde_json::json;

use super::*;

fn sub(id: Option<&str>, event: &str, url: &str, state: SubscriptionState) -> Subscription {
    Subscription {
        id: id.map(str::to_owned),
        events: vec![event.to_string()],
        target_url: url.to_string(),
        state,
        status: String::new(),
        name: None,
        spec: json!({"fields": ""}),
        revision: None,
    }
}

const HERE: &str = "https://new.example/hooks/tx";
const ACTIVE: SubscriptionState = SubscriptionState::Active;

#[test]
fn each_difference_is_one_step() {
    let desired = vec![
        sub(None, "a.create", HERE, ACTIVE),
        sub(None, "b.create", HERE, ACTIVE),
        sub(None, "c.create", HERE, ACTIVE),
        sub(None, "d.create", HERE, ACTIVE),
        sub(None, "e.create", HERE, ACTIVE),
    ];
    let listed = vec![
        sub(Some("1"), "a.create", HERE, ACTIVE),
        sub(
            Some("2"),
            "b.create",
            "https://old.example/x/hooks/tx",
            ACTIVE,
        ),
        sub(Some("3"), "C.Create", HERE, SubscriptionState::Failing),
        sub(Some("4"), "d.create", HERE, SubscriptionState::Disabled),
        sub(Some("5"), "z.create", HERE, ACTIVE),
        sub(
            Some("6"),
            "a.create",
            "https://elsewhere.example/in",
            ACTIVE,
        ),
        sub(
            Some("7"),
            "a.create",
            "https://new.example/hooks/tx-other",
            ACTIVE,
        ),
    ];
    let p = plan("tx", HERE, desired, listed.clone(), false);
    let verbs: Vec<_> = p
        .steps
        .iter()
        .map(|s| (s.verb(), s.listed().and_then(|l| l.id.clone())))
        .collect();
    assert_eq!(
        verbs,
        [
            ("keep", Some("1".into())),
            ("move", Some("2".into())),
            ("enable", Some("3".into())),
            ("disabled", Some("4".into())),
            ("create", None),
            ("delete", Some("5".into())),
            ("foreign", Some("6".into())),
            ("foreign", Some("7".into())),
        ]
    );
    assert_eq!(p.changes(), 4);
    let pruned = plan("tx", HERE, vec![], listed, true);
    assert_eq!(
        pruned.steps.iter().filter(|s| s.verb() == "prune").count(),
        2
    );
}

#[test]
fn a_changed_spec_is_a_move_and_duplicates_are_deleted() {
    let mut wanted = sub(None, "a.create", HERE, ACTIVE);
    wanted.spec = json!({"fields": "id,name"});
    let listed = vec![
        sub(Some("1"), "a.create", HERE, ACTIVE),
        sub(Some("2"), "a.create", HERE, ACTIVE),
    ];
    let p = plan("tx", HERE, vec![wanted.clone()], listed, false);
    assert!(matches!(&p.steps[0], Step::Move { old, .. } if old.id.as_deref() == Some("1")));
    assert_eq!(p.steps[1].verb(), "delete");
    let mut exact = wanted.clone();
    exact.id = Some("9".into());
    let p = plan("tx", HERE, vec![wanted], vec![exact], false);
    assert_eq!(p.changes(), 0);
}

#[test]
fn credentials_in_target_urls_are_not_shown() {
    assert_eq!(
        shown("https://user:s3cret@h.example/hooks/tx?token=abc&x=1"),
        "https://user:***@h.example/hooks/tx?token=***&x=***"
    );
    assert!(is_ours("https://u:p@h.example/base/hooks/tx?token=1", "tx"));
    assert!(is_ours("https://h.example/hooks/tx/tok", "tx"));
    assert!(!is_ours("https://h.example/hooks/tx2", "tx"));
    assert!(!is_ours("not a url", "tx"));
}
