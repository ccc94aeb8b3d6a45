//! The Python binding: ``gridgate._engine.Engine``. Every call releases the GIL while the
//! engine works; the request path never takes it.

use std::os::fd::FromRawFd;
use std::sync::Mutex;
use std::time::Duration;

use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;

use crate::engine::{Config, Engine};

/// The gateway engine: ``Engine(config_json)``, ``start()``, ``load_snapshot(document)``.
#[pyclass(name = "Engine", module = "gridgate._engine", frozen)]
struct PyEngine {
    inner: Mutex<Engine>,
}

impl PyEngine {
    fn engine(&self) -> std::sync::MutexGuard<'_, Engine> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[pymethods]
impl PyEngine {
    #[new]
    fn new(config: &str) -> PyResult<Self> {
        let config: Config = serde_json::from_str(config)
            .map_err(|e| PyValueError::new_err(format!("engine config: {e}")))?;
        let engine = Engine::new(config).map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
        Ok(Self {
            inner: Mutex::new(engine),
        })
    }

    /// Serve on the engine's own threads; ``(host, port)`` served. ``fd``: a listening TCP
    /// socket's descriptor the engine takes over (and closes when it stops); without it the
    /// engine binds the config's ``host:port`` itself.
    #[pyo3(signature = (fd = None))]
    fn start(&self, py: Python<'_>, fd: Option<i32>) -> PyResult<(String, u16)> {
        let listening = match fd {
            // SAFETY: the caller hands over a descriptor it owns and no longer uses (Python
            // passes ``os.dup`` of its socket), so this is its only owner from now on.
            Some(fd) if fd >= 0 => Some(unsafe { std::net::TcpListener::from_raw_fd(fd) }),
            Some(fd) => return Err(PyValueError::new_err(format!("bad descriptor {fd}"))),
            None => None,
        };
        let address = py
            .detach(|| self.engine().start_on(listening))
            .map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
        Ok((address.ip().to_string(), address.port()))
    }

    /// The control plane's readiness answer (``ready`` and its JSON body) and its own
    /// Prometheus series, served on ``/readyz`` and ``/metrics`` while fresh (10 s).
    fn report_probes(&self, ready: bool, body: Vec<u8>, metrics: String) {
        self.engine().shared.report_probes(ready, body, metrics);
    }

    /// Compile and swap in a snapshot document (JSON bytes); its version.
    fn load_snapshot(&self, py: Python<'_>, document: &[u8]) -> PyResult<u64> {
        let shared = self.engine().shared.clone();
        py.detach(|| shared.load_snapshot(document))
            .map_err(PyValueError::new_err)
    }

    /// Refuse the session's tokens at once, until ``until`` (Unix seconds).
    fn revoke(&self, session_id: &str, until: f64) {
        self.engine().shared.tokens.revoke(session_id, until);
    }

    /// How many tokens named a key the JWKS did not hold (the JWKS is then fetched again).
    #[getter]
    fn unknown_keys(&self) -> u64 {
        self.engine()
            .shared
            .tokens
            .unknown_keys
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The version of the snapshot serving now (0 before the first one).
    #[getter]
    fn version(&self) -> u64 {
        self.engine().shared.snapshot.load().version
    }

    /// The Prometheus text of the engine's series.
    fn metrics(&self) -> String {
        self.engine().shared.render_metrics()
    }

    /// Stop listening; running requests get ``grace_s`` seconds to finish.
    #[pyo3(signature = (grace_s = 5.0))]
    fn stop(&self, py: Python<'_>, grace_s: f64) {
        py.detach(|| {
            self.engine()
                .stop(Duration::from_secs_f64(grace_s.max(0.0)))
        });
    }
}

#[pymodule]
fn _engine(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_class::<PyEngine>()?;
    Ok(())
}
