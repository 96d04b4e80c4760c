//! Open vSwitch ports through OVSDB's JSON-RPC (RFC 7047) on ovsdb-server's unix socket, the
//! same transactions `ovs-vsctl add-port` / `del-port` make, without running it.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use serde_json::{json, Value};

/// Where ovsdb-server listens on Debian and most distributions.
pub const DEFAULT_SOCKET: &str = "/run/openvswitch/db.sock";
const DATABASE: &str = "Open_vSwitch";
const TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum OvsError {
    #[error("OVSDB at {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("OVSDB reply: {0}")]
    BadReply(String),
    #[error("OVSDB refused the transaction: {0}")]
    Refused(String),
    #[error("no Open vSwitch bridge named {0}")]
    NoBridge(String),
}

/// `transact` request adding port `port` (with one interface of the same name) to `bridge`.
pub fn add_port_request(id: u64, bridge: &str, port: &str) -> Value {
    json!({
        "method": "transact",
        "id": id,
        "params": [
            DATABASE,
            {"op": "insert", "table": "Interface", "row": {"name": port}, "uuid-name": "new_iface"},
            {"op": "insert", "table": "Port",
             "row": {"name": port, "interfaces": ["named-uuid", "new_iface"]},
             "uuid-name": "new_port"},
            {"op": "mutate", "table": "Bridge", "where": [["name", "==", bridge]],
             "mutations": [["ports", "insert", ["set", [["named-uuid", "new_port"]]]]]},
        ],
    })
}

/// `transact` request listing the Port rows named `port`.
pub fn find_port_request(id: u64, port: &str) -> Value {
    json!({
        "method": "transact",
        "id": id,
        "params": [DATABASE, {"op": "select", "table": "Port", "where": [["name", "==", port]], "columns": ["_uuid"]}],
    })
}

/// `transact` request dropping the Port row `uuid` from whichever bridge holds it; OVSDB then
/// garbage-collects the unreferenced Port and Interface rows.
pub fn del_port_request(id: u64, uuid: &str) -> Value {
    let set = json!(["set", [["uuid", uuid]]]);
    json!({
        "method": "transact",
        "id": id,
        "params": [
            DATABASE,
            {"op": "mutate", "table": "Bridge", "where": [["ports", "includes", set]],
             "mutations": [["ports", "delete", set]]},
        ],
    })
}

/// The per-operation results of a `transact` reply; any error (of an operation, or of the
/// commit, reported as an extra element) refuses the whole transaction.
pub fn transact_results(reply: &Value) -> Result<Vec<Value>, OvsError> {
    if let Some(err) = reply.get("error").filter(|e| !e.is_null()) {
        return Err(OvsError::Refused(err.to_string()));
    }
    let results = reply
        .get("result")
        .and_then(Value::as_array)
        .ok_or_else(|| OvsError::BadReply(format!("no result array in {reply}")))?;
    for r in results {
        if let Some(e) = r.get("error") {
            let details = r.get("details").and_then(Value::as_str).unwrap_or("");
            return Err(OvsError::Refused(
                format!("{} {details}", e.as_str().unwrap_or("error"))
                    .trim_end()
                    .to_string(),
            ));
        }
    }
    Ok(results.clone())
}

/// A short-lived OVSDB connection.
#[derive(Debug)]
pub struct Ovsdb {
    path: String,
    stream: UnixStream,
    next_id: u64,
}

impl Ovsdb {
    pub fn connect(path: &str) -> Result<Ovsdb, OvsError> {
        let io = |source| OvsError::Io {
            path: path.to_string(),
            source,
        };
        let stream = UnixStream::connect(path).map_err(io)?;
        stream.set_read_timeout(Some(TIMEOUT)).map_err(io)?;
        stream.set_write_timeout(Some(TIMEOUT)).map_err(io)?;
        Ok(Ovsdb {
            path: path.to_string(),
            stream,
            next_id: 1,
        })
    }

    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Sends a request and returns the reply with the same id, answering `echo` keepalives.
    fn call(&mut self, req: &Value) -> Result<Value, OvsError> {
        let io = |path: &str, source| OvsError::Io {
            path: path.to_string(),
            source,
        };
        let id = req.get("id").cloned().unwrap_or(Value::Null);
        self.stream
            .write_all(req.to_string().as_bytes())
            .map_err(|e| io(&self.path, e))?;
        let reader = self.stream.try_clone().map_err(|e| io(&self.path, e))?;
        let mut values = serde_json::Deserializer::from_reader(reader).into_iter::<Value>();
        loop {
            let msg = match values.next() {
                Some(Ok(v)) => v,
                Some(Err(e)) => return Err(OvsError::BadReply(e.to_string())),
                None => {
                    return Err(OvsError::BadReply(
                        "connection closed before the reply".into(),
                    ))
                }
            };
            if msg.get("method").and_then(Value::as_str) == Some("echo") {
                let reply =
                    json!({"id": msg.get("id"), "result": msg.get("params"), "error": null});
                self.stream
                    .write_all(reply.to_string().as_bytes())
                    .map_err(|e| io(&self.path, e))?;
                continue;
            }
            if msg.get("id") == Some(&id) {
                return Ok(msg);
            }
        }
    }

    fn port_uuid(&mut self, port: &str) -> Result<Option<String>, OvsError> {
        let req = find_port_request(self.id(), port);
        let results = transact_results(&self.call(&req)?)?;
        let uuid = results
            .first()
            .and_then(|r| r.get("rows"))
            .and_then(Value::as_array)
            .and_then(|rows| rows.first())
            .and_then(|row| row.get("_uuid"))
            .and_then(|u| u.get(1))
            .and_then(Value::as_str)
            .map(str::to_string);
        Ok(uuid)
    }

    /// Adds the port unless a port of that name already exists.
    pub fn add_port(&mut self, bridge: &str, port: &str) -> Result<(), OvsError> {
        if self.port_uuid(port)?.is_some() {
            return Ok(());
        }
        let req = add_port_request(self.id(), bridge, port);
        let results = transact_results(&self.call(&req)?)?;
        // The mutate matched no bridge: the new rows are unreferenced and dropped at commit.
        match results
            .get(2)
            .and_then(|r| r.get("count"))
            .and_then(Value::as_u64)
        {
            Some(0) => Err(OvsError::NoBridge(bridge.to_string())),
            Some(_) => Ok(()),
            None => Err(OvsError::BadReply(format!(
                "no count for the Bridge mutation in {results:?}"
            ))),
        }
    }

    /// Removes the port wherever it is; a missing port is not an error.
    pub fn del_port(&mut self, port: &str) -> Result<(), OvsError> {
        let Some(uuid) = self.port_uuid(port)? else {
            return Ok(());
        };
        let req = del_port_request(self.id(), &uuid);
        transact_results(&self.call(&req)?).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    #[test]
    fn add_port_transaction_matches_rfc7047() {
        let req = add_port_request(7, "xenbr0", "vif3.0");
        let want = json!({
            "method": "transact",
            "id": 7,
            "params": [
                "Open_vSwitch",
                {"op": "insert", "table": "Interface", "row": {"name": "vif3.0"}, "uuid-name": "new_iface"},
                {"op": "insert", "table": "Port", "row": {"name": "vif3.0", "interfaces": ["named-uuid", "new_iface"]}, "uuid-name": "new_port"},
                {"op": "mutate", "table": "Bridge", "where": [["name", "==", "xenbr0"]],
                 "mutations": [["ports", "insert", ["set", [["named-uuid", "new_port"]]]]]}
            ]
        });
        assert_eq!(req, want);
    }

    #[test]
    fn delete_and_select_transactions() {
        let del = del_port_request(3, "36b0d2a4-0000-4000-8000-000000000001");
        let set = json!(["set", [["uuid", "36b0d2a4-0000-4000-8000-000000000001"]]]);
        assert_eq!(
            del["params"][1]["where"],
            json!([["ports", "includes", set.clone()]])
        );
        assert_eq!(
            del["params"][1]["mutations"],
            json!([["ports", "delete", set]])
        );
        let sel = find_port_request(4, "vif3.0");
        assert_eq!(sel["params"][1]["where"], json!([["name", "==", "vif3.0"]]));
        assert_eq!(sel["params"][1]["op"], "select");
    }

    #[test]
    fn reply_errors_are_reported() {
        let ok = json!({"id": 1, "error": null, "result": [{"uuid": ["uuid", "a"]}, {"count": 1}]});
        assert_eq!(transact_results(&ok).unwrap().len(), 2);
        let op_err = json!({"id": 1, "error": null, "result": [{}, {"error": "constraint violation", "details": "duplicate name"}]});
        assert_eq!(
            transact_results(&op_err).unwrap_err().to_string(),
            "OVSDB refused the transaction: constraint violation duplicate name"
        );
        let rpc_err = json!({"id": 1, "error": "unknown database", "result": null});
        assert!(matches!(
            transact_results(&rpc_err),
            Err(OvsError::Refused(_))
        ));
        assert!(matches!(
            transact_results(&json!({"id": 1})),
            Err(OvsError::BadReply(_))
        ));
    }

    /// A scripted ovsdb-server: answers each request with the next canned result; before the
    /// first answer it sends an `echo` to check the client answers keepalives.
    fn fake_server(results: Vec<Value>) -> (String, std::thread::JoinHandle<Vec<Value>>) {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("xendevd-ovs-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("db.sock");
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).unwrap();
        let handle = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut seen = Vec::new();
            let reader = conn.try_clone().unwrap();
            let mut reqs = serde_json::Deserializer::from_reader(reader).into_iter::<Value>();
            for (i, result) in results.into_iter().enumerate() {
                let req = reqs.next().unwrap().unwrap();
                if i == 0 {
                    let echo = json!({"method": "echo", "params": ["x"], "id": "echo"});
                    conn.write_all(echo.to_string().as_bytes()).unwrap();
                    let echo_reply = reqs.next().unwrap().unwrap();
                    assert_eq!(echo_reply["id"], "echo");
                    assert_eq!(echo_reply["result"], json!(["x"]));
                }
                let reply = json!({"id": req["id"], "error": null, "result": result});
                seen.push(req);
                conn.write_all(reply.to_string().as_bytes()).unwrap();
            }
            std::fs::remove_dir_all(&dir).unwrap();
            seen
        });
        (path.to_str().unwrap().to_string(), handle)
    }

    #[test]
    fn add_port_against_a_fake_ovsdb() {
        let (path, server) = fake_server(vec![
            json!([{"rows": []}]),
            json!([{"uuid": ["uuid", "i"]}, {"uuid": ["uuid", "p"]}, {"count": 1}]),
        ]);
        Ovsdb::connect(&path)
            .unwrap()
            .add_port("ovsbr0", "vif5.0")
            .unwrap();
        let seen = server.join().unwrap();
        assert_eq!(seen[0]["params"][1]["op"], "select");
        assert_eq!(
            seen[1]["params"][3]["where"],
            json!([["name", "==", "ovsbr0"]])
        );
    }

    #[test]
    fn add_port_to_a_missing_bridge_fails() {
        let (path, server) = fake_server(vec![
            json!([{"rows": []}]),
            json!([{"uuid": ["uuid", "i"]}, {"uuid": ["uuid", "p"]}, {"count": 0}]),
        ]);
        let err = Ovsdb::connect(&path)
            .unwrap()
            .add_port("nobr", "vif5.0")
            .unwrap_err();
        assert!(
            matches!(err, OvsError::NoBridge(ref b) if b == "nobr"),
            "{err}"
        );
        server.join().unwrap();
    }

    #[test]
    fn del_port_against_a_fake_ovsdb() {
        let (path, server) = fake_server(vec![
            json!([{"rows": [{"_uuid": ["uuid", "p-uuid"]}]}]),
            json!([{"count": 1}]),
        ]);
        Ovsdb::connect(&path).unwrap().del_port("vif5.0").unwrap();
        let seen = server.join().unwrap();
        assert_eq!(
            seen[1]["params"][1]["mutations"],
            json!([["ports", "delete", ["set", [["uuid", "p-uuid"]]]]])
        );
    }
}
