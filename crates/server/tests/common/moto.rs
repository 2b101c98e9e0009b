//! moto's S3-compatible server for the files tests on S3.

/// A moto S3 server (`moto_server` from the test virtualenv) on a loopback port, killed on
/// drop.
pub struct Moto {
    child: std::process::Child,
    pub endpoint: String,
}

impl Moto {
    /// Starts moto beside `python`, or `None` (a skip, or a failure with
    /// `AUGUR_STORE_TESTS_REQUIRED=1`) if the virtualenv has no moto.
    pub fn start(python: &str) -> Option<Moto> {
        let bin = std::path::Path::new(python).with_file_name("moto_server");
        if !bin.exists() {
            assert!(
                std::env::var("AUGUR_STORE_TESTS_REQUIRED").as_deref() != Ok("1"),
                "{} is missing and AUGUR_STORE_TESTS_REQUIRED=1 (scripts/test.sh installs moto[server])",
                bin.display()
            );
            eprintln!("skipping: the test virtualenv has no moto_server");
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = std::process::Command::new(bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start moto_server");
        let moto = Moto {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(std::time::Instant::now() < deadline, "moto did not start");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Some(moto)
    }

    /// The `AWS_*` variables that point Augur at this server.
    pub fn env(&self) -> [(&'static str, &str); 5] {
        [
            ("AWS_ENDPOINT_URL", self.endpoint.as_str()),
            ("AWS_ALLOW_HTTP", "true"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
        ]
    }

    /// Creates the bucket `name`.
    pub async fn create_bucket(&self, name: &str) {
        let made = reqwest::Client::new()
            .put(format!("{}/{name}", self.endpoint))
            .send()
            .await
            .unwrap();
        assert!(made.status().is_success(), "{}", made.status());
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
