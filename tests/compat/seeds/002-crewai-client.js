// Seed 002 (CrewAI backend), "Client Connection (JavaScript)", verbatim.
// Connect to execution-specific updates
const ws = new WebSocket('ws://localhost:8000/api/v1/websocket/ws/executions/exec_123');

ws.onmessage = function(event) {
    const data = JSON.parse(event.data);
    console.log('Received event:', data);
};

// Send subscription update
ws.send(JSON.stringify({
    action: 'subscribe',
    subscriptions: ['execution_123', 'task_updates']
}));
