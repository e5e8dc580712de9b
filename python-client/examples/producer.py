"""Ten lines: publish typed events, then wait for a person's decision."""

import herald

hub = herald.Herald()  # HERALD_URL and HERALD_API_KEY, else http://127.0.0.1:8765
hub.publish("execution:exec_123", "execution.started", {"name": "nightly training"}, key="exec_123")
hub.publish("execution:exec_123", "execution.progress", {"progress": 75, "message": "75%"}, key="exec_123")
step = herald.TaskStepResult(step="model_training", message="Training failed, retry?", status="failed")
decision = hub.request_approval("user_123", "exec_123", 3, step, timeout=300, default_proceed=False)
print(decision.status, decision.proceed, decision.feedback, decision.decided_by)
