//! Chat templates: the model's own Jinja `tokenizer.chat_template`, or a built-in one chosen by
//! architecture for models that ship none, rendered with minijinja the way transformers renders
//! them (`trim_blocks`, `lstrip_blocks`, Python string methods, `raise_exception`).

use minijinja::{context, Environment, ErrorKind};
use serde::{Deserialize, Serialize};

use crate::engine::Model;
use crate::error::{Error, Result};

/// One turn of a conversation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The turn's text.
    pub content: String,
}

impl Message {
    /// A message with this role and text.
    pub fn new(role: &str, content: impl Into<String>) -> Self {
        Message {
            role: role.to_string(),
            content: content.into(),
        }
    }
}

/// Built-in templates, by name, for models without one.
const BUILTIN: &[(&str, &str)] = &[
    (
        "chatml",
        "{%- for message in messages -%}\
         {{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}\
         {%- endfor -%}\
         {%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}",
    ),
    (
        // Gemma 1-3: no system role (a system message is prepended to the first user turn), the
        // assistant is called `model`.
        "gemma",
        "{{- bos_token -}}\
         {%- if messages and messages[0]['role'] == 'system' -%}\
           {%- set prefix = messages[0]['content'] | trim + '\\n\\n' -%}\
           {%- set turns = messages[1:] -%}\
         {%- else -%}\
           {%- set prefix = '' -%}{%- set turns = messages -%}\
         {%- endif -%}\
         {%- for message in turns -%}\
           {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}\
             {{- raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') -}}\
           {%- endif -%}\
           {%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}\
           {{- '<start_of_turn>' + role + '\\n' + (prefix if loop.first else '') + message['content'] | trim + '<end_of_turn>\\n' -}}\
         {%- endfor -%}\
         {%- if add_generation_prompt -%}{{- '<start_of_turn>model\\n' -}}{%- endif -%}",
    ),
    (
        "llama3",
        "{{- bos_token -}}\
         {%- for message in messages -%}\
           {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' -}}\
         {%- endfor -%}\
         {%- if add_generation_prompt -%}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}{%- endif -%}",
    ),
    (
        // Llama 2 / Mistral instruct: the system prompt goes inside the first [INST].
        "llama2",
        "{%- if messages and messages[0]['role'] == 'system' -%}\
           {%- set system = '<<SYS>>\\n' + messages[0]['content'] | trim + '\\n<</SYS>>\\n\\n' -%}\
           {%- set turns = messages[1:] -%}\
         {%- else -%}\
           {%- set system = '' -%}{%- set turns = messages -%}\
         {%- endif -%}\
         {%- for message in turns -%}\
           {%- if message['role'] == 'user' -%}\
             {{- bos_token + '[INST] ' + (system if loop.first else '') + message['content'] | trim + ' [/INST]' -}}\
           {%- elif message['role'] == 'assistant' -%}\
             {{- ' ' + message['content'] | trim + ' ' + eos_token -}}\
           {%- endif -%}\
         {%- endfor -%}",
    ),
    (
        "phi3",
        "{%- for message in messages -%}\
           {{- '<|' + message['role'] + '|>\\n' + message['content'] + '<|end|>\\n' -}}\
         {%- endfor -%}\
         {%- if add_generation_prompt -%}{{- '<|assistant|>\\n' -}}{%- endif -%}",
    ),
];

/// Names of the built-in templates.
pub fn builtin_names() -> Vec<&'static str> {
    BUILTIN.iter().map(|(n, _)| *n).collect()
}

/// A chat template ready to render conversations for one model.
#[derive(Clone, Debug)]
pub struct ChatTemplate {
    /// Where it came from: `model` (the file's own), `builtin:<name>`, or a file path.
    pub origin: String,
    source: String,
    bos: String,
    eos: String,
}

impl ChatTemplate {
    /// The template for `model`: `choice` (a built-in name or a Jinja file) when given, else the
    /// model's own, else the built-in one for its family.
    pub fn for_model(model: &Model, choice: Option<&str>) -> Result<ChatTemplate> {
        let (origin, source) = match choice {
            Some(c) => match BUILTIN.iter().find(|(n, _)| *n == c) {
                Some((n, s)) => (format!("builtin:{n}"), s.to_string()),
                None if std::path::Path::new(c).is_file() => {
                    let s = std::fs::read_to_string(c).map_err(|e| Error::io(c, e))?;
                    (c.to_string(), s)
                }
                None => {
                    return Err(Error::InvalidArgument(format!(
                        "--chat-template '{c}' is neither a built-in template ({}) nor a file",
                        builtin_names().join(", ")
                    )))
                }
            },
            None => match model.chat_template() {
                Some(s) => ("model".to_string(), s.to_string()),
                None => {
                    let name = family_default(model);
                    let s = BUILTIN
                        .iter()
                        .find(|(n, _)| *n == name)
                        .map(|(_, s)| s.to_string())
                        .unwrap_or_default();
                    (format!("builtin:{name}"), s)
                }
            },
        };
        let tok = model.tokenizer();
        let text_of = |id: Option<u32>| {
            id.and_then(|i| tok.token_text(i))
                .unwrap_or_default()
                .to_string()
        };
        let t = ChatTemplate {
            origin,
            source,
            bos: text_of(tok.bos_id()),
            eos: text_of(tok.eos_id()),
        };
        // Compile once now so a broken template is reported at load, not at the first turn.
        environment()
            .template_from_str(&t.source)
            .map_err(|e| t.error(e))?;
        Ok(t)
    }

    /// The prompt text for `messages`, ending with the assistant's turn opener when
    /// `add_generation_prompt`.
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        let env = environment();
        let tmpl = env
            .template_from_str(&self.source)
            .map_err(|e| self.error(e))?;
        tmpl.render(context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos,
            eos_token => self.eos,
        })
        .map_err(|e| self.error(e))
    }

    /// Rendered and tokenized: special tokens parsed, and BOS added when the model adds one
    /// unless the template already wrote it.
    pub fn tokens(&self, model: &Model, messages: &[Message]) -> Result<Vec<u32>> {
        let text = self.render(messages, true)?;
        let wrote_bos = !self.bos.is_empty() && text.starts_with(&self.bos);
        Ok(model.tokenizer().encode(&text, !wrote_bos, true))
    }

    fn error(&self, e: minijinja::Error) -> Error {
        let mut msg = format!("chat template ({}): {e}", self.origin);
        let mut src = std::error::Error::source(&e);
        while let Some(s) = src {
            msg.push_str(&format!(": {s}"));
            src = s.source();
        }
        Error::InvalidArgument(msg.replace('\n', " "))
    }
}

/// The built-in template for a model's family, confirmed by its vocabulary.
fn family_default(model: &Model) -> &'static str {
    let tok = model.tokenizer();
    let has = |t: &str| tok.token_id(t).is_some();
    match model.config().arch.name {
        n if n.starts_with("gemma") => "gemma",
        "phi3" => "phi3",
        _ if has("<|start_header_id|>") => "llama3",
        _ if has("<|im_start|>") => "chatml",
        _ if has("[INST]") || model.config().arch.name == "llama" => "llama2",
        _ => "chatml",
    }
}

/// A Jinja environment configured like transformers' chat-template sandbox.
fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    minijinja_contrib::add_to_environment(&mut env);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function("raise_exception", |msg: String| -> Result<String, _> {
        Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg))
    });
    env.add_function("strftime_now", |fmt: String| strftime_now(&fmt));
    env
}

/// Today's date (UTC) formatted with the strftime codes chat templates use.
fn strftime_now(fmt: &str) -> String {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (y, m, d) = civil_from_days((secs / 86400) as i64);
    let month = MONTHS[(m - 1) as usize];
    let mut out = String::new();
    let mut chars = fmt.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('d') => out.push_str(&format!("{d:02}")),
            Some('m') => out.push_str(&format!("{m:02}")),
            Some('Y') => out.push_str(&y.to_string()),
            Some('y') => out.push_str(&format!("{:02}", y % 100)),
            Some('B') => out.push_str(month),
            Some('b') => out.push_str(&month[..3]),
            Some('%') => out.push('%'),
            Some(o) => {
                out.push('%');
                out.push(o);
            }
            None => out.push('%'),
        }
    }
    out
}

/// (year, month, day) of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(name: &str, msgs: &[Message], gen: bool) -> String {
        let t = ChatTemplate {
            origin: name.into(),
            source: BUILTIN.iter().find(|(n, _)| *n == name).unwrap().1.into(),
            bos: "<bos>".into(),
            eos: "</s>".into(),
        };
        t.render(msgs, gen).unwrap()
    }

    #[test]
    fn gemma_folds_the_system_prompt_into_the_first_turn() {
        let msgs = [
            Message::new("system", "Be brief."),
            Message::new("user", "Hi"),
            Message::new("assistant", "Hello!"),
            Message::new("user", "Bye"),
        ];
        assert_eq!(
            render("gemma", &msgs, true),
            "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\nHello!<end_of_turn>\n<start_of_turn>user\nBye<end_of_turn>\n<start_of_turn>model\n"
        );
    }

    #[test]
    fn gemma_rejects_turns_out_of_order() {
        let t = ChatTemplate {
            origin: "builtin:gemma".into(),
            source: BUILTIN[1].1.into(),
            bos: String::new(),
            eos: String::new(),
        };
        let err = t
            .render(&[Message::new("assistant", "x")], true)
            .unwrap_err()
            .to_string();
        assert!(err.contains("alternate"), "{err}");
    }

    #[test]
    fn chatml_and_llama3_shapes() {
        let msgs = [Message::new("user", "Hi")];
        assert_eq!(
            render("chatml", &msgs, true),
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
        assert_eq!(
            render("llama3", &msgs, true),
            "<bos><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
        );
        assert_eq!(render("llama2", &msgs, true), "<bos>[INST] Hi [/INST]");
    }

    #[test]
    fn python_string_methods_work() {
        let t = ChatTemplate {
            origin: "test".into(),
            source: "{% for m in messages %}{{ m.content.strip().upper() }}{% if m.role.startswith('us') %}!{% endif %}{% endfor %}".into(),
            bos: String::new(),
            eos: String::new(),
        };
        assert_eq!(
            t.render(&[Message::new("user", "  hi ")], false).unwrap(),
            "HI!"
        );
    }

    #[test]
    fn dates_are_civil() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20414), (2025, 11, 22));
        assert!(strftime_now("%d %b %Y").len() == 11);
    }
}
