//! Questions one node asks the others about their connections (the admin
//! API answering for every node): the asker publishes the question on
//! [`keys::QUESTIONS_CHANNEL`], which every node's feed follows; each other
//! node answers on the asker's own channel ([`keys::node_channel`]), where
//! the asker's feed hands the answer to the waiting call. `PUBLISH` says
//! how many feeds heard the question, so the asker knows how many answers
//! to wait for, and waits [`ANSWER_WITHIN`] at most.

use std::collections::HashMap;
use std::time::Duration;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::{Shared, keys};
use crate::core::broker::{NodeAnswer, NodeQuestion};

/// How long an asker waits for the other nodes' answers.
const ANSWER_WITHIN: Duration = Duration::from_secs(1);
/// Most answers one question takes (nodes sharing one Redis).
const MAX_ANSWERS: usize = 256;
/// Most questions waiting for answers at once on one node; past it, a
/// question is answered by this node alone.
const MAX_WAITING: usize = 1024;

/// The calls waiting for answers, by question id.
#[derive(Debug, Default)]
pub(super) struct Questions {
    waiting: Mutex<HashMap<String, mpsc::Sender<NodeAnswer>>>,
}

/// A question as it crosses Redis.
#[derive(Debug, Serialize, Deserialize)]
struct Asked {
    id: String,
    from: String,
    question: NodeQuestion,
}

/// An answer as it crosses Redis, naming the question it answers.
#[derive(Debug, Serialize, Deserialize)]
struct Answered {
    answers: String,
    answer: NodeAnswer,
}

impl Shared {
    /// Asks every other node `question`; the answers that came within
    /// [`ANSWER_WITHIN`].
    pub(super) async fn ask_nodes(&self, question: &NodeQuestion) -> Vec<NodeAnswer> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let (sender, mut answers) = mpsc::channel(MAX_ANSWERS);
        {
            let mut waiting = self.questions.waiting.lock();
            if waiting.len() >= MAX_WAITING {
                tracing::warn!(
                    "too many questions to other nodes at once; answering for this node only"
                );
                return Vec::new();
            }
            waiting.insert(id.clone(), sender);
        }
        let asked = Asked {
            id: id.clone(),
            from: self.node.clone(),
            question: question.clone(),
        };
        let message = serde_json::to_string(&asked).unwrap_or_default();
        let heard: Result<usize, _> = redis::cmd("PUBLISH")
            .arg(keys::QUESTIONS_CHANNEL)
            .arg(message)
            .query_async(&mut self.commands.clone())
            .await;
        // This node's own feed hears the question too, while it is connected.
        let mine = usize::from(self.feed.connected());
        let expected = heard.map_or(0, |n| n.saturating_sub(mine));
        let mut gathered = Vec::with_capacity(expected);
        let deadline = tokio::time::sleep(ANSWER_WITHIN);
        tokio::pin!(deadline);
        while gathered.len() < expected {
            tokio::select! {
                answer = answers.recv() => match answer {
                    Some(answer) => gathered.push(answer),
                    None => break,
                },
                () = &mut deadline => {
                    tracing::warn!(
                        asked = expected,
                        answered = gathered.len(),
                        "nodes did not answer within {ANSWER_WITHIN:?}: the admin answer leaves their connections out"
                    );
                    break;
                }
            }
        }
        self.questions.waiting.lock().remove(&id);
        gathered
    }

    /// A question heard on [`keys::QUESTIONS_CHANNEL`]: another node's is
    /// answered on its channel; this node's own is not.
    pub(super) async fn question_heard(&self, payload: &[u8]) {
        let Ok(asked) = serde_json::from_slice::<Asked>(payload) else {
            tracing::warn!("a question from another node that does not decode; ignored");
            return;
        };
        if asked.from == self.node {
            return;
        }
        let answered = Answered {
            answers: asked.id,
            answer: self.handler.on_node_question(&asked.question),
        };
        let message = serde_json::to_string(&answered).unwrap_or_default();
        let sent: Result<(), _> = redis::cmd("PUBLISH")
            .arg(keys::node_channel(&asked.from))
            .arg(message)
            .query_async(&mut self.commands.clone())
            .await;
        if let Err(error) = sent {
            tracing::warn!(%error, node = asked.from, "cannot answer another node's question");
        }
    }

    /// An answer heard on this node's channel: handed to the call waiting
    /// for it, if it still waits.
    pub(super) fn answer_heard(&self, payload: &[u8]) {
        let Ok(answered) = serde_json::from_slice::<Answered>(payload) else {
            tracing::warn!("an answer from another node that does not decode; ignored");
            return;
        };
        let waiting = self.questions.waiting.lock();
        if let Some(sender) = waiting.get(&answered.answers) {
            // Full only past MAX_ANSWERS nodes: the rest are left out.
            let _ = sender.try_send(answered.answer);
        }
    }
}

/// Whether a message on a node's channel is an answer (a JSON object)
/// rather than one of its liveness probes (a number).
pub(super) fn is_answer(payload: &[u8]) -> bool {
    payload.first() == Some(&b'{')
}
