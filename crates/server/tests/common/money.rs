//! Money in tests: [`As`], a client acting with one token, and [`assert_balanced`], the
//! ledger invariants every test that moves credits checks afterwards.

use std::collections::HashMap;

use serde_json::{Value, json};

/// An HTTP client acting with one token.
#[derive(Clone)]
pub struct As {
    pub http: reqwest::Client,
    pub base: String,
    pub token: String,
}

impl As {
    pub fn new(base: &str, token: &str) -> Self {
        As {
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(64)
                .build()
                .unwrap(),
            base: base.to_owned(),
            token: token.to_owned(),
        }
    }

    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self
            .http
            .request(method.parse().unwrap(), format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub async fn try_create(&self, model: &str, input: Value) -> reqwest::Result<(u16, Value)> {
        let response = self
            .http
            .post(format!("{}/v1/models/{model}/predictions", self.base))
            .bearer_auth(&self.token)
            .json(&json!({ "input": input }))
            .send()
            .await?;
        let status = response.status().as_u16();
        Ok((status, response.json().await?))
    }

    /// Creates `username` and returns a token of its own.
    pub async fn account(&self, username: &str, grant: i64) -> String {
        let (status, body) = self
            .call("POST", "/v1/accounts", Some(json!({"username": username})))
            .await;
        assert_eq!(status, 201, "{body}");
        if grant > 0 {
            let (status, body) = self
                .call(
                    "POST",
                    &format!("/v1/accounts/{username}/credits"),
                    Some(json!({"amount": grant, "reason": "grant"})),
                )
                .await;
            assert_eq!(status, 200, "{body}");
        }
        let (status, body) = self
            .call("POST", &format!("/v1/accounts/{username}/tokens"), None)
            .await;
        assert_eq!(status, 201, "{body}");
        body["token"].as_str().unwrap().to_owned()
    }

    /// Every ledger entry of `username`, newest first.
    pub async fn ledger(&self, username: &str) -> Vec<Value> {
        self.every(&format!("/v1/accounts/{username}/ledger?limit=1000"))
            .await
    }

    /// Every result of a listing, from its first page at `path` through its `next` links.
    pub async fn every(&self, path: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut path = path.to_owned();
        loop {
            let (status, page) = self.call("GET", &path, None).await;
            assert_eq!(status, 200, "{page}");
            out.extend(page["results"].as_array().unwrap().iter().cloned());
            match page["next"].as_str() {
                Some(next) => path = next.strip_prefix(&self.base).unwrap().to_owned(),
                None => return out,
            }
        }
    }
}

/// Checks the money invariants of one account, and returns its balance: nothing reserved,
/// the balance equal to the sum of the ledger and to grants + top-ups + adjustments − charges,
/// each entry's `balance_after` the running sum, each prediction reserved once and settled
/// once.
pub async fn assert_balanced(admin: &As, username: &str) -> i64 {
    let (_, credits) = admin
        .call("GET", &format!("/v1/accounts/{username}/credits"), None)
        .await;
    let ledger = admin.ledger(username).await;
    let sum = |f: &dyn Fn(&Value) -> bool, field: &str| -> i64 {
        ledger
            .iter()
            .filter(|e| f(e))
            .map(|e| e[field].as_i64().unwrap())
            .sum()
    };
    let reason = |r: &'static str| move |e: &Value| e["reason"] == r;
    let balance = credits["balance"].as_i64().unwrap();
    assert_eq!(credits["reserved"], 0, "{username}: {credits}");
    assert_eq!(balance, sum(&|_| true, "delta"), "{username}: Σ ledger");
    assert_eq!(sum(&|_| true, "held"), 0, "{username}: Σ held");
    let income = sum(&reason("grant"), "delta")
        + sum(&reason("topup"), "delta")
        + sum(&reason("adjust"), "delta");
    assert_eq!(
        balance,
        income + sum(&reason("charge"), "delta"),
        "{username}: grants + top-ups − charges"
    );
    // Running balances, oldest first.
    let mut running = 0;
    for entry in ledger.iter().rev() {
        running += entry["delta"].as_i64().unwrap();
        assert_eq!(entry["balance_after"], running, "{entry}");
    }
    // One reserve and one settlement per prediction.
    let mut per_prediction: HashMap<String, Vec<String>> = HashMap::new();
    for entry in &ledger {
        if let Some(p) = entry["reference"].as_str()
            && entry["reason"] != "topup"
        {
            per_prediction
                .entry(p.to_owned())
                .or_default()
                .push(entry["reason"].as_str().unwrap().to_owned());
        }
    }
    for (p, reasons) in &per_prediction {
        let count = |r: &str| reasons.iter().filter(|x| *x == r).count();
        assert_eq!(count("reserve"), 1, "{p}: {reasons:?}");
        assert_eq!(
            count("charge").max(count("refund")),
            1,
            "{p} settled once: {reasons:?}"
        );
        assert!(count("charge") + count("refund") == 1, "{p}: {reasons:?}");
    }
    balance
}
