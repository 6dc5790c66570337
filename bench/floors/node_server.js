// Floor: a dedicated single-purpose Node.js HTTP server computing a + b.
const http = require("http");
const server = http.createServer((req, res) => {
  const chunks = [];
  req.on("data", (c) => chunks.push(c));
  req.on("end", () => {
    const { params } = JSON.parse(Buffer.concat(chunks).toString() || "{}");
    const body = JSON.stringify({ result: params.a + params.b });
    res.writeHead(200, { "content-type": "application/json", "content-length": Buffer.byteLength(body) });
    res.end(body);
  });
});
server.keepAliveTimeout = 60000;
server.listen(0, "127.0.0.1", () => console.log(`listening ${server.address().port}`));
