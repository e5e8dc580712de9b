// Seed 003 (state machine engine), "Client-Side Implementation", verbatim.
const ws = new WebSocket('ws://localhost:3002/ws/events');

ws.onmessage = (event) => {
  const data = JSON.parse(event.data);
  
  if (data.type === 'ping') {
    // Respond to keepalive ping
    ws.send(JSON.stringify({ type: 'pong' }));
  } else {
    // Handle state machine events
    handleStateEvent(data);
  }
};
