// Peer hub: Node `ws`, the broadcast idiom from its README.
// `/ws` subscribes; every message received on `/pub` is sent to every open
// subscriber. Prints `listening on http://HOST:PORT` first.
'use strict';
const http = require('http');
const { WebSocketServer, WebSocket } = require('ws');

const server = http.createServer();
const subscribers = new WebSocketServer({ noServer: true, perMessageDeflate: false });
const publishers = new WebSocketServer({ noServer: true, perMessageDeflate: false, maxPayload: 1 << 24 });

publishers.on('connection', (ws) => {
  ws.on('message', (data, isBinary) => {
    subscribers.clients.forEach((client) => {
      if (client.readyState === WebSocket.OPEN) client.send(data, { binary: isBinary });
    });
  });
});

server.on('upgrade', (req, socket, head) => {
  const wss = req.url.startsWith('/pub') ? publishers : subscribers;
  wss.handleUpgrade(req, socket, head, (ws) => wss.emit('connection', ws, req));
});

server.listen(0, '127.0.0.1', 1024, () => {
  const { address, port } = server.address();
  console.log(`listening on http://${address}:${port}`);
});
