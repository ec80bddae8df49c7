//! The request schemas of `/openapi.json` say what the server accepts: every
//! body the schema allows passes the server's validation (is not a 400), and
//! every body it refuses is a 400. Probes change one member of a valid body at
//! a time to values from a common list (empty, long, non-hex, control
//! characters, numbers, null, …); the schema is evaluated by a small JSON
//! Schema (2020-12) evaluator that knows exactly the keywords the document
//! uses and fails on any other, so the check cannot pass by ignoring one.

mod common;

use common::api::{start_with, CONFIG};
use serde_json::{json, Map, Value};

/// A JSON Schema evaluator over the document's own components.
struct Schemas<'a> {
    doc: &'a Value,
}

/// Keywords that describe and do not constrain.
const ANNOTATIONS: &[&str] = &[
    "description",
    "example",
    "examples",
    "title",
    "default",
    "format",
    "deprecated",
    "readOnly",
    "writeOnly",
];

impl Schemas<'_> {
    fn resolve<'s>(&'s self, schema: &'s Value) -> &'s Value {
        match schema.get("$ref").and_then(Value::as_str) {
            Some(r) => {
                let path = r.strip_prefix("#/").expect("a local $ref");
                let target = path
                    .split('/')
                    .try_fold(self.doc, |v, k| v.get(k))
                    .unwrap_or_else(|| panic!("$ref {r} resolves to nothing"));
                self.resolve(target)
            }
            None => schema,
        }
    }

    fn type_ok(t: &str, v: &Value) -> bool {
        match t {
            "null" => v.is_null(),
            "boolean" => v.is_boolean(),
            "string" => v.is_string(),
            "object" => v.is_object(),
            "array" => v.is_array(),
            "number" => v.is_number(),
            // JSON Schema counts 1.0 as an integer; serde does not, and no
            // probe sends one.
            "integer" => v.is_i64() || v.is_u64(),
            other => panic!("unknown type {other}"),
        }
    }

    /// Whether `v` satisfies `schema`.
    fn ok(&self, schema: &Value, v: &Value) -> bool {
        let schema = self.resolve(schema);
        let Some(s) = schema.as_object() else {
            return schema
                .as_bool()
                .unwrap_or_else(|| panic!("a schema: {schema}"));
        };
        s.iter().all(|(k, x)| self.keyword(s, k, x, v))
    }

    fn keyword(&self, s: &Map<String, Value>, k: &str, x: &Value, v: &Value) -> bool {
        let len = |v: &Value| v.as_str().map(|t| t.chars().count() as u64);
        let num = |x: &Value| x.as_f64().expect("a number");
        match k {
            _ if ANNOTATIONS.contains(&k) => true,
            "type" => match x {
                Value::String(t) => Self::type_ok(t, v),
                Value::Array(ts) => ts.iter().any(|t| Self::type_ok(t.as_str().unwrap(), v)),
                _ => panic!("type {x}"),
            },
            "enum" => x.as_array().unwrap().contains(v),
            "const" => x == v,
            "pattern" => match v.as_str() {
                Some(t) => regex::Regex::new(x.as_str().unwrap()).unwrap().is_match(t),
                None => true,
            },
            "minLength" => len(v).is_none_or(|n| n >= x.as_u64().unwrap()),
            "maxLength" => len(v).is_none_or(|n| n <= x.as_u64().unwrap()),
            "minimum" => v.as_f64().is_none_or(|n| n >= num(x)),
            "maximum" => v.as_f64().is_none_or(|n| n <= num(x)),
            "minItems" => v
                .as_array()
                .is_none_or(|a| a.len() as u64 >= x.as_u64().unwrap()),
            "maxItems" => v
                .as_array()
                .is_none_or(|a| a.len() as u64 <= x.as_u64().unwrap()),
            "items" => v.as_array().is_none_or(|a| a.iter().all(|i| self.ok(x, i))),
            "required" => v.as_object().is_none_or(|o| {
                x.as_array()
                    .unwrap()
                    .iter()
                    .all(|r| o.contains_key(r.as_str().unwrap()))
            }),
            "properties" => v.as_object().is_none_or(|o| {
                x.as_object()
                    .unwrap()
                    .iter()
                    .all(|(name, p)| o.get(name).is_none_or(|m| self.ok(p, m)))
            }),
            "additionalProperties" => v.as_object().is_none_or(|o| {
                let known = s.get("properties").and_then(Value::as_object);
                o.iter()
                    .filter(|(name, _)| known.is_none_or(|k| !k.contains_key(*name)))
                    .all(|(_, m)| self.ok(x, m))
            }),
            "propertyNames" => v
                .as_object()
                .is_none_or(|o| o.keys().all(|name| self.ok(x, &json!(name)))),
            "minProperties" => v
                .as_object()
                .is_none_or(|o| o.len() as u64 >= x.as_u64().unwrap()),
            "oneOf" => {
                x.as_array()
                    .unwrap()
                    .iter()
                    .filter(|s| self.ok(s, v))
                    .count()
                    == 1
            }
            "anyOf" => x.as_array().unwrap().iter().any(|s| self.ok(s, v)),
            "allOf" => x.as_array().unwrap().iter().all(|s| self.ok(s, v)),
            "not" => !self.ok(x, v),
            other => panic!("the evaluator does not know the keyword {other}: add it"),
        }
    }
}

/// Values each member is probed with.
fn probes() -> Vec<Value> {
    let mut out = vec![
        json!(null),
        json!(true),
        json!(0),
        json!(1),
        json!(-1),
        json!(2419200),
        json!(2419201),
        json!(1.5),
        json!([]),
        json!({}),
        json!({"k": "v"}),
        json!({"k": 1}),
        json!(["u1"]),
        json!([""]),
        json!([1]),
    ];
    for s in [
        "",
        " ",
        "a",
        "has space",
        "ctl\u{1}char",
        "+49 151 1234 5678",
        "0049 151 1234567",
        "+0 123",
        "12",
        "Europe/Berlin",
        "Mars/Olympus",
        "de-DE",
        "de_AT",
        "english!",
        "https://x.example/p.png",
        "ftp://x.example/p",
        "shop://orders/1",
        "not a uri",
        "primary",
        "all",
        "marketing",
        "opened",
        "sent",
        "ios",
        "android",
        "windows",
    ] {
        out.push(json!(s));
    }
    for (unit, n) in [("x", 256), ("x", 257), ("x", 4096), ("x", 4097)] {
        out.push(json!(unit.repeat(n)));
    }
    // APNs-like tokens: 64 hex digits, an odd count, non-hex, 200 and 202.
    for t in [
        "ab".repeat(32),
        format!("{}a", "ab".repeat(31)),
        "zz".repeat(32),
        "ab".repeat(100),
        "ab".repeat(101),
    ] {
        out.push(json!(t));
    }
    out
}

/// Sets the member at `path` (`a` or `a.b`) of `body` to `v`.
fn with(body: &Value, path: &str, v: &Value) -> Value {
    let mut b = body.clone();
    let mut at = &mut b;
    let mut keys = path.split('.').peekable();
    while let Some(k) = keys.next() {
        if keys.peek().is_none() {
            at[k] = v.clone();
        } else {
            at = &mut at[k];
        }
    }
    b
}

/// The members of an object schema to probe, `message.title` style for those of
/// a nested object.
fn members(schemas: &Schemas<'_>, schema: &Value, prefix: &str, out: &mut Vec<String>) {
    let schema = schemas.resolve(schema);
    let mut props: Vec<&Map<String, Value>> = Vec::new();
    if let Some(p) = schema.get("properties").and_then(Value::as_object) {
        props.push(p);
    }
    for key in ["oneOf", "anyOf", "allOf"] {
        for s in schema
            .get(key)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(p) = schemas
                .resolve(s)
                .get("properties")
                .and_then(Value::as_object)
            {
                props.push(p);
            }
        }
    }
    for p in props {
        for (name, s) in p {
            let path = format!("{prefix}{name}");
            if out.contains(&path) {
                continue;
            }
            out.push(path.clone());
            let s = schemas.resolve(s);
            if s.get("properties").is_some() {
                members(schemas, s, &format!("{path}."), out);
            }
        }
    }
}

/// The refusals no schema of the document can state, because they depend on
/// the app (its configured topics) or on the body as a whole (APNs' 4 KB
/// payload): the document says them in words. Each is allowed only for the
/// member it concerns and with the server's own reason.
fn beyond_the_schema(path: &str, member: &str, answer: &Value) -> bool {
    let message = answer["message"].as_str().unwrap_or_default();
    match (path, member) {
        ("/v1/push", "topic") => message.contains("\"topic\" must be one of [marketing, news]"),
        ("/v1/users/u1/subscriptions", _) => message.contains("unknown topic"),
        ("/v1/push", "message.title" | "message.summary") => {
            message.contains("the APNs payload would be")
        }
        _ => false,
    }
}

#[tokio::test]
async fn request_schemas_accept_exactly_what_the_server_accepts() {
    let db = common::sqlite().await;
    // The push quota is not what is probed here.
    let config = format!("[server.push]\nrequests_per_minute = 1000000\n{CONFIG}");
    let api = start_with(&db, &config).await;
    let key = Some(api.shop.as_str());
    let doc: Value = api
        .request("GET", "/openapi.json", None)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let schemas = Schemas { doc: &doc };
    // A user to address, and a message to receipt.
    let (status, _) = api.call("PUT", "/v1/users/u1", key, Some(json!({}))).await;
    assert_eq!(status, 200);
    let ios = "ab".repeat(32);
    let operations = [
        ("PUT", "/v1/users/u1", json!({"phone": "+49 151 1234 5678"})),
        (
            "POST",
            "/v1/devices",
            json!({"platform": "android", "token": "fcm-1", "userId": "u1"}),
        ),
        (
            "POST",
            "/v1/devices",
            json!({"platform": "ios", "token": ios, "installId": "i1"}),
        ),
        (
            "PUT",
            "/v1/users/u1/subscriptions",
            json!({"marketing": true}),
        ),
        (
            "POST",
            "/v1/receipts",
            json!({"messageId": 1, "status": "opened"}),
        ),
        (
            "POST",
            "/v1/push",
            json!({"userIds": ["u1"], "message": {"title": "t", "summary": "s"}}),
        ),
    ];
    let mut disagreements = Vec::new();
    let mut probed = 0;
    for (method, path, base) in &operations {
        let template = doc["paths"]
            .as_object()
            .unwrap()
            .keys()
            .find(|t| {
                let (a, b): (Vec<&str>, Vec<&str>) =
                    (t.split('/').collect(), path.split('/').collect());
                a.len() == b.len() && a.iter().zip(&b).all(|(x, y)| x == y || x.starts_with('{'))
            })
            .unwrap_or_else(|| panic!("{path} is not in the document"));
        let op = &doc["paths"][template][method.to_lowercase()];
        let schema = &op["requestBody"]["content"]["application/json"]["schema"];
        assert!(!schema.is_null(), "{method} {path}: no JSON body schema");
        assert!(
            schemas.ok(schema, base),
            "{method} {path}: the valid body {base} fails its schema"
        );
        let mut paths = Vec::new();
        members(&schemas, schema, "", &mut paths);
        // A member the schema does not name: refused by both.
        paths.push("unknownMember".to_owned());
        for member in paths {
            for v in probes() {
                let body = with(base, &member, &v);
                let schema_ok = schemas.ok(schema, &body);
                let (status, answer) = api.call(method, path, key, Some(body.clone())).await;
                probed += 1;
                let server_ok = status != 400;
                // The apps here have no provider: a push past validation is a 503.
                assert!(
                    status < 500 || (status == 503 && *path == "/v1/push"),
                    "{method} {path} {body}: {status} {answer}"
                );
                let allowed = schema_ok && !server_ok && beyond_the_schema(path, &member, &answer);
                if schema_ok != server_ok && !allowed {
                    disagreements.push(format!(
                        "{method} {path} {member} = {}: schema {}, server {status} {}",
                        serde_json::to_string(&v)
                            .unwrap()
                            .chars()
                            .take(40)
                            .collect::<String>(),
                        if schema_ok { "accepts" } else { "refuses" },
                        answer["message"]
                            .as_str()
                            .unwrap_or_default()
                            .chars()
                            .take(100)
                            .collect::<String>()
                    ));
                }
            }
        }
    }
    assert!(probed > 500, "{probed} probes");
    assert!(
        disagreements.is_empty(),
        "{} of {probed} probes disagree:\n{}",
        disagreements.len(),
        disagreements.join("\n")
    );
    db.finish().await;
}
