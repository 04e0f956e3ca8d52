//! pingora glue: the data plane. Request phases call into `policy` and `oidc`; the ONE table
//! that turns failures into HTTP responses lives in [`error`].
