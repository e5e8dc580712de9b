//! Questions one node asks the others about their connections (the admin
//! API answering for every node): the asker publishes the question on
//! [`keys::QUESTIONS_CHANNEL`], which every node's feed follows; each other
//! node answers on the asker's own channel ([`keys::node_channel`]), where
//! the asker's feed hands the answer to the waiting call. `PUBLISH` says
//! how many feeds heard the question, so the asker knows how many answers
//! to wait for; the whole exchange takes [`ASK_WITHIN`] at most.
//!
//! A node answers off its feed task: the feed hands each question to a
//! bounded queue that [`answer_questions`] drains, so building an answer
//! (a list of every connection) never delays the delivery of events.
//!
//! A question carries when it was asked, by Redis's clock: a node that hears
//! it too late for its answer to reach the asker before the asker stops
//! waiting (it was stopped, or far behind) neither answers nor carries it
//! out, so a disconnect its asker reported as not done (503) is not done
//! later.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{Shared, keys};
use crate::core::broker::BrokerError;
use crate::core::cluster::{Gathered, NodeAnswer, NodeQuestion};

/// How long asking the other nodes may take, from sending the question to
/// the last answer.
const ASK_WITHIN: Duration = Duration::from_secs(1);
/// What a node leaves of [`ASK_WITHIN`] for its answer to reach the asker:
/// a question heard later than that is neither answered nor carried out.
const ANSWER_ON_ITS_WAY: Duration = Duration::from_millis(250);
/// Most answers one question takes (nodes sharing one Redis).
const MAX_ANSWERS: usize = 256;
/// Most questions waiting for answers at once on one node; past it, a
/// question is answered by this node alone.
const MAX_WAITING: usize = 1024;
/// Other nodes' questions waiting for this node's answer; past it, one is
/// dropped (its asker counts this node as not answering).
const MAX_HEARD: usize = 64;

/// This node's side of the questions: the calls waiting for answers, by
/// question id, and the other nodes' questions waiting to be answered.
#[derive(Debug)]
pub(super) struct Questions {
    waiting: Mutex<HashMap<String, mpsc::Sender<NodeAnswer>>>,
    heard: mpsc::Sender<Vec<u8>>,
}

impl Questions {
    /// The questions' state, and the queue of heard questions for
    /// [`answer_questions`].
    pub(super) fn new() -> (Questions, mpsc::Receiver<Vec<u8>>) {
        let (heard, questions) = mpsc::channel(MAX_HEARD);
        let state = Questions {
            waiting: Mutex::default(),
            heard,
        };
        (state, questions)
    }
}

/// A question as it crosses Redis.
#[derive(Debug, Serialize, Deserialize)]
struct Asked {
    id: String,
    from: String,
    /// When it was asked, in ms by Redis's clock (0: not said).
    #[serde(default)]
    asked_at: u64,
    question: NodeQuestion,
}

/// An answer as it crosses Redis, naming the question it answers.
#[derive(Debug, Serialize, Deserialize)]
struct Answered {
    answers: String,
    answer: NodeAnswer,
}

/// A question waiting for its answers. Dropped (its call finished, or was
/// cancelled with its HTTP request), it leaves `waiting`: answers that come
/// later are dropped, and it stops counting toward [`MAX_WAITING`].
struct Waiting<'a> {
    questions: &'a Questions,
    id: String,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.questions.waiting.lock().remove(&self.id);
    }
}

impl Shared {
    /// Asks every other node `question`; the answers that came within
    /// [`ASK_WITHIN`].
    pub(super) async fn ask_nodes(&self, question: &NodeQuestion) -> Result<Gathered, BrokerError> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let (sender, mut answers) = mpsc::channel(MAX_ANSWERS);
        let _waiting = {
            let mut waiting = self.questions.waiting.lock();
            if waiting.len() >= MAX_WAITING {
                return Err(BrokerError::Unavailable(
                    "too many questions to the other nodes at once".into(),
                ));
            }
            waiting.insert(id.clone(), sender);
            Waiting {
                questions: &self.questions,
                id: id.clone(),
            }
        };
        let asked = Asked {
            id,
            from: self.node.clone(),
            asked_at: self.redis_now(),
            question: question.clone(),
        };
        let deadline = tokio::time::Instant::now() + ASK_WITHIN;
        let message =
            serde_json::to_string(&asked).map_err(|e| BrokerError::Write(e.to_string()))?;
        let mut commands = self.commands.clone();
        let mut publish = redis::cmd("PUBLISH");
        publish.arg(keys::QUESTIONS_CHANNEL).arg(message);
        let publish = publish.query_async::<usize>(&mut commands);
        let heard = match tokio::time::timeout_at(deadline, publish).await {
            Ok(heard) => heard.map_err(|e| super::unavailable(&e))?,
            Err(_) => {
                return Err(BrokerError::Unavailable(
                    "Redis did not take the question in time".into(),
                ));
            }
        };
        // This node's own feed hears the question too, while it is
        // connected (it does not answer it).
        let mine = usize::from(self.feed.connected());
        let mut gathered = Gathered {
            answers: Vec::new(),
            missing: heard.saturating_sub(mine).min(MAX_ANSWERS),
        };
        while gathered.missing > 0 {
            match tokio::time::timeout_at(deadline, answers.recv()).await {
                Ok(Some(answer)) => {
                    gathered.answers.push(answer);
                    gathered.missing -= 1;
                }
                Ok(None) => break,
                Err(_) => {
                    tracing::warn!(
                        answered = gathered.answers.len(),
                        missing = gathered.missing,
                        "nodes did not answer within {ASK_WITHIN:?}: the admin answer leaves their connections out"
                    );
                    break;
                }
            }
        }
        Ok(gathered)
    }

    /// A question heard on [`keys::QUESTIONS_CHANNEL`], handed to
    /// [`answer_questions`] (dropped, and logged, when too many wait).
    pub(super) fn question_heard(&self, payload: &[u8]) {
        if self.questions.heard.try_send(payload.to_vec()).is_err() {
            tracing::warn!("too many questions from other nodes at once; one is not answered");
        }
    }

    /// Answers another node's question on its channel; this node's own is
    /// not answered.
    async fn answer_question(&self, payload: &[u8]) {
        let Ok(asked) = serde_json::from_slice::<Asked>(payload) else {
            tracing::warn!("a question from another node that does not decode; ignored");
            return;
        };
        if asked.from == self.node {
            return;
        }
        let now = self.redis_now();
        let last_useful = asked
            .asked_at
            .saturating_add((ASK_WITHIN - ANSWER_ON_ITS_WAY).as_millis() as u64);
        if asked.asked_at > 0 && now > last_useful {
            tracing::warn!(
                node = asked.from,
                late_ms = now.saturating_sub(asked.asked_at),
                "a question heard too late for its asker: neither answered nor carried out"
            );
            return;
        }
        let answered = Answered {
            answers: asked.id,
            answer: self.handler.on_node_question(&asked.question),
        };
        let message = match serde_json::to_string(&answered) {
            Ok(message) => message,
            Err(error) => {
                tracing::warn!(%error, "cannot encode an answer to another node");
                return;
            }
        };
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

/// Answers the other nodes' questions the feed hands over, one at a time,
/// until `stop`.
pub(super) async fn answer_questions(
    engine: Arc<Shared>,
    mut questions: mpsc::Receiver<Vec<u8>>,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            question = questions.recv() => match question {
                Some(question) => engine.answer_question(&question).await,
                None => return,
            },
        }
    }
}

/// Whether a message on a node's channel is an answer (a JSON object)
/// rather than one of its liveness probes (a number).
pub(super) fn is_answer(payload: &[u8]) -> bool {
    payload.first() == Some(&b'{')
}
