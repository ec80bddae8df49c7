//! `GET /openapi.json` through real HTTP: it is an OpenAPI 3.1 document that an
//! independent model of the specification (the `oas3` crate) reads whole, whose
//! references all resolve, that lists exactly the API's routes, and whose every
//! operation is served where it says, with the security it says.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::api::start;
use common::TestDb;
use meridian::store::Store;
use oas3::spec::{ObjectOrReference, ParameterIn, SecurityScheme};
use serde_json::Value;

/// The API as issues 5 and 6 list it. A route added to the code must be added here
/// too; a route the code has no longer fails here as well.
const ROUTES: &[(&str, &str)] = &[
    ("GET", "/health"),
    ("GET", "/openapi.json"),
    ("GET", "/metrics"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("PUT", "/v1/users/{external_id}"),
    ("POST", "/v1/users:import"),
    ("GET", "/v1/users/{external_id}/subscriptions"),
    ("PUT", "/v1/users/{external_id}/subscriptions"),
    ("POST", "/v1/devices"),
    ("DELETE", "/v1/devices/{token}"),
    ("GET", "/v1/messages"),
    ("GET", "/v1/messages/{id}"),
    ("POST", "/v1/receipts"),
    ("POST", "/v1/push"),
    ("GET", "/v1/campaigns"),
    ("POST", "/v1/campaigns"),
    ("POST", "/v1/campaigns:preview"),
    ("GET", "/v1/campaigns/{id}"),
    ("PATCH", "/v1/campaigns/{id}"),
    ("GET", "/v1/campaigns/{id}/slots"),
    ("POST", "/v1/campaigns/{id}/{action}"),
];

/// Routes anyone may call.
const PUBLIC: &[&str] = &[
    "/health",
    "/openapi.json",
    "/metrics",
    "/healthz",
    "/readyz",
];

async fn fetch<S: Store + Clone>(db: &TestDb<S>) -> (common::api::Api<S>, String) {
    let api = start(db).await;
    let res = api
        .request("GET", "/openapi.json", None)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let content_type = res.headers()["content-type"].to_str().unwrap().to_owned();
    assert_eq!(content_type, "application/json");
    let text = res.text().await.unwrap();
    (api, text)
}

/// Every `"$ref"` in the document, with where it was found.
fn refs<'a>(v: &'a Value, at: String, out: &mut Vec<(String, &'a str)>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("$ref", Value::String(r)) => out.push((at.clone(), r)),
                    _ => refs(v, format!("{at}/{k}"), out),
                }
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                refs(v, format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

/// Where `b` differs from `a`, as JSON pointers with both values.
fn differences(a: &Value, b: &Value, at: String, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for k in x.keys().chain(y.keys()).collect::<BTreeSet<_>>() {
                match (x.get(k), y.get(k)) {
                    (Some(u), Some(v)) => differences(u, v, format!("{at}/{k}"), out),
                    // A JSON Schema 2020-12 keyword (3.1's dialect) that oas3's
                    // schema model does not carry.
                    (Some(_), None) if k == "propertyNames" => {}
                    // oas3 writes some absent members as null.
                    (None, Some(Value::Null)) => {}
                    (u, v) => out.push(format!("{at}/{k}: {u:?} became {v:?}")),
                }
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (u, v)) in x.iter().zip(y).enumerate() {
                differences(u, v, format!("{at}/{i}"), out);
            }
        }
        _ if a != b => out.push(format!("{at}: {a} became {b}")),
        _ => {}
    }
}

/// The document reads as OpenAPI 3.1 in an independent model, and everything
/// it refers to is in it.
async fn the_document_is_openapi_3_1_and_whole<S: Store + Clone>(db: &TestDb<S>) {
    let (_api, text) = fetch(db).await;
    let spec = oas3::from_json(&text).expect("an OpenAPI 3.1 document");
    let version = spec.validate_version().expect("a 3.1.x version");
    assert_eq!((version.major, version.minor), (3, 1));
    assert!(!spec.info.title.is_empty() && !spec.info.version.is_empty());

    // Nothing the model does not know is dropped: read and written back, the
    // document is unchanged (so no member is misspelt or misplaced).
    let raw: Value = serde_json::from_str(&text).unwrap();
    let again: Value = serde_json::from_str(&oas3::to_json(&spec).unwrap()).unwrap();
    let mut lost = Vec::new();
    differences(&raw, &again, String::new(), &mut lost);
    assert!(lost.is_empty(), "not OpenAPI 3.1 as written: {lost:#?}");

    let mut found = Vec::new();
    refs(&raw, String::new(), &mut found);
    assert!(!found.is_empty());
    for (at, r) in found {
        let target = r
            .strip_prefix("#/")
            .and_then(|p| p.split('/').try_fold(&raw, |v, k| v.get(k)));
        assert!(target.is_some(), "{at}: $ref {r} resolves to nothing");
    }

    let mut ids = BTreeSet::new();
    for (path, method, op) in spec.operations() {
        let name = format!("{method} {path}");
        let id = op.operation_id.clone().expect(&name);
        assert!(ids.insert(id.clone()), "{name}: operationId {id} twice");
        assert!(!op.tags.is_empty(), "{name}: no tag");
        let responses = op.responses(&spec);
        assert!(
            responses.keys().any(|s| s.starts_with('2')),
            "{name}: no success answer"
        );
        for (status, r) in &responses {
            assert!(r.description.is_some(), "{name} {status}: no description");
            let is_json = r.content.keys().all(|t| t == "application/json");
            if !status.starts_with('2') {
                assert!(
                    is_json && !r.content.is_empty(),
                    "{name} {status}: not JSON"
                );
            }
        }
        if let Some(body) = op.request_body(&spec).unwrap() {
            assert!(!body.content.is_empty(), "{name}: a body of no type");
        }
        // Every `{name}` of the path is a required path parameter, and no other.
        let templated: BTreeSet<String> = path
            .split('{')
            .skip(1)
            .filter_map(|p| p.split_once('}').map(|(n, _)| n.to_owned()))
            .collect();
        let declared: BTreeSet<String> = op
            .parameters
            .iter()
            .map(|p| p.resolve(&spec).unwrap())
            .filter(|p| p.location == ParameterIn::Path)
            .inspect(|p| assert_eq!(p.required, Some(true), "{name}: {}", p.name))
            .map(|p| p.name)
            .collect();
        assert_eq!(declared, templated, "{name}: path parameters");
    }
}

/// The document lists exactly [`ROUTES`], and each of them is served where the
/// document says: an operation that requires the bearer key is refused without
/// one (401), a public one answers 200, another method is a 405 allowing just
/// the documented ones. None reaches the fallback.
async fn every_route_is_listed_served_and_secured_as_documented<S: Store + Clone>(db: &TestDb<S>) {
    let (api, text) = fetch(db).await;
    let spec = oas3::from_json(&text).unwrap();
    let listed: BTreeSet<(String, String)> = spec
        .operations()
        .map(|(path, method, _)| (method.to_string(), path))
        .collect();
    let expected: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
        .collect();
    assert_eq!(listed, expected);

    let schemes = &spec.components.as_ref().unwrap().security_schemes;
    assert!(
        matches!(
            schemes.get("bearer"),
            Some(ObjectOrReference::Object(SecurityScheme::Http { scheme, .. })) if scheme == "bearer"
        ),
        "{schemes:?}"
    );
    let global: Vec<BTreeMap<String, Vec<String>>> =
        spec.security.iter().map(|r| r.0.clone()).collect();
    assert_eq!(global, [BTreeMap::from([("bearer".to_owned(), vec![])])]);

    // A sample value for each path parameter.
    let sample = |path: &str| {
        path.replace("{external_id}", "u1")
            .replace("{token}", "t1")
            .replace("{id}", "1")
            .replace("{action}", "pause")
    };
    for (path, method, op) in spec.operations() {
        let name = format!("{method} {path}");
        // The operation's own requirement, else the document's.
        let security: Vec<&BTreeMap<String, Vec<String>>> = if op.security.is_empty() {
            spec.security.iter().map(|r| &r.0).collect()
        } else {
            op.security.iter().map(|r| &r.0).collect()
        };
        let public = PUBLIC.contains(&path.as_str());
        let (status, body) = api.call(method.as_str(), &sample(&path), None, None).await;
        // A key or none: receipts, which the app posts with the push's token.
        let optional = security.iter().any(|r| r.is_empty())
            && security.iter().any(|r| r.contains_key("bearer"));
        if optional {
            assert_eq!(path, "/v1/receipts", "{name} takes no key as well as one");
            // Refused for its missing body, not for the missing key.
            assert!(
                (400..500).contains(&status) && status != 401,
                "{name}: {status} {body}"
            );
        } else if public {
            assert!(
                security.iter().any(|r| r.is_empty()),
                "{name} needs no key: {security:?}"
            );
            assert_eq!(status, 200, "{name}: {body}");
        } else {
            assert!(
                security.iter().all(|r| r.contains_key("bearer")),
                "{name} needs the bearer key: {security:?}"
            );
            assert_eq!(
                (status, body["error"].as_str()),
                (401, Some("unauthorized")),
                "{name}"
            );
        }
    }

    // Every other method on a documented path is a JSON 405 whose Allow header
    // lists what the document lists (and HEAD with GET).
    for (path, item) in spec.paths.iter().flatten() {
        let documented: BTreeSet<String> = item
            .methods()
            .into_iter()
            .map(|(m, _)| m.to_string())
            .collect();
        for method in ["GET", "PUT", "POST", "DELETE", "PATCH"] {
            if documented.contains(method) {
                continue;
            }
            let res = api
                .request(method, &sample(path), None)
                .send()
                .await
                .unwrap();
            let name = format!("{method} {path}");
            assert_eq!(res.status().as_u16(), 405, "{name}");
            let allow: BTreeSet<String> = res.headers()["allow"]
                .to_str()
                .unwrap()
                .split(',')
                .map(|m| m.trim().to_owned())
                .filter(|m| m != "HEAD")
                .collect();
            assert_eq!(allow, documented, "{name}");
            let body: Value = res.json().await.unwrap();
            assert_eq!(body["error"], "method_not_allowed", "{name}: {body}");
        }
    }

    // The same probe on a route that is not there reaches the fallback.
    let (status, body) = api.call("GET", "/v1/nothing", None, None).await;
    assert_eq!(
        (status, body["message"].as_str()),
        (404, Some("no such route"))
    );
}

storage_tests!(
    the_document_is_openapi_3_1_and_whole,
    every_route_is_listed_served_and_secured_as_documented,
);
