// Seed 004 (cmbagent), "Frontend Integration", verbatim.
import { useResilientWebSocket } from './hooks/useResilientWebSocket';

const { connected, sendMessage } = useResilientWebSocket({
  runId: 'run-123',
  onMessage: (message) => {
    // Handle typed WebSocket messages
    switch (message.event_type) {
      case 'workflow_started':
        // ...
      case 'step_completed':
        // ...
    }
  },
  onConnectionChange: (connected) => {
    // Update UI connection indicator
  }
});
