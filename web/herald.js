// herald.js: the browser client library (placeholder until written)
