// A real Express app used as an upstream by tests/e2e_path_spellings.rs. Express's own router
// (default options: case-insensitive, non-strict trailing slash) decides which handler a
// spelling of the protected request reaches; the test then reads /__hits to see it.
//
//   node server.mjs PORT      listens on 127.0.0.1:PORT, prints "ready PORT" on stdout
//
// Routes:
//   POST /v1/deployments/production  -> handler "protected" (the request behind the approval)
//   POST /v1/deployments/:env        -> handler "generic" (env as Express decoded it)
//   anything else                    -> 404, handler "none"
//   GET  /__hits                     -> {"protected": N, "log": [...]}: every request seen, with
//                                       the X-Spelling header the test sends, the handler, the
//                                       method, the raw request target as received and whether
//                                       it carried Countersign-Approval
//
// `X-HTTP-Method-Override` is honoured through the method-override package with its defaults
// (only on POST), as an Express app that accepts overrides is usually set up.
import express from "express";
import methodOverride from "method-override";

const port = Number(process.argv[2] ?? process.env.PORT);
if (!Number.isInteger(port) || port <= 0) {
  console.error("usage: node server.mjs PORT");
  process.exit(2);
}

const log = [];
let protectedHits = 0;

const app = express();

// Served before anything that could rewrite the request, and only ever asked for directly.
app.get("/__hits", (req, res) => {
  res.json({ protected: protectedHits, log });
});

// Record every request once it is answered, whatever answered it.
app.use((req, res, next) => {
  const rawUrl = req.url;
  const wireMethod = req.method;
  res.on("finish", () => {
    log.push({
      spelling: req.get("x-spelling") ?? null,
      handler: res.locals.handler ?? "none",
      method: req.method,
      wire_method: wireMethod,
      target: rawUrl,
      env: res.locals.env ?? null,
      host: req.get("host") ?? null,
      approval: req.get("countersign-approval") !== undefined,
      status: res.statusCode,
    });
  });
  next();
});

app.use(methodOverride("X-HTTP-Method-Override"));

app.post("/v1/deployments/production", (req, res) => {
  protectedHits += 1;
  res.locals.handler = "protected";
  res.set("x-handler", "protected").json({ handler: "protected", target: req.originalUrl });
});

app.post("/v1/deployments/:env", (req, res) => {
  res.locals.handler = "generic";
  res.locals.env = req.params.env;
  res
    .set("x-handler", "generic")
    .json({ handler: "generic", env: req.params.env, target: req.originalUrl });
});

app.use((req, res) => {
  res.status(404).set("x-handler", "none").json({ handler: "none", target: req.originalUrl });
});

// Express's default error handler would print stacks for malformed escapes; answer like the
// catch-all instead (still recorded as "none").
app.use((err, req, res, _next) => {
  res
    .status(err.status ?? err.statusCode ?? 500)
    .set("x-handler", "none")
    .json({ handler: "none", error: String(err.message ?? err) });
});

const server = app.listen(port, "127.0.0.1", () => {
  console.log(`ready ${port}`);
});
server.on("error", (e) => {
  console.error(`express upstream: ${e.message}`);
  process.exit(1);
});
