# Seed 003 (state machine engine), "Client-Side Sender (State Machines)", verbatim.
def send_event(event_type: str, machine_id: str, **kwargs):
    """Send event to WebSocket server via Unix socket"""
    try:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        
        event = {
            'type': event_type,
            'machine_id': machine_id,
            'timestamp': time.time(),
            **kwargs
        }
        
        message = json.dumps(event).encode('utf-8')
        sock.sendto(message, SOCKET_PATH)
        sock.close()
        
    except Exception as e:
        # Fail silently - monitoring is optional
        logger.debug(f"Failed to send event: {e}")
