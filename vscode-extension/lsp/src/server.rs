//! The language server: open documents, debounced checks, and the LSP requests.
//!
//! Edits never race: the server runs with concurrency level 1, and every notification that
//! changes a document applies the change before its first `await`. Checks run on the blocking
//! pool, one at a time per document, and publish only if the document has not changed meanwhile;
//! requests parse on the blocking pool too, so a huge text never stalls the protocol (`shutdown`
//! is answered at once).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tower_lsp_server::jsonrpc::{Error as RpcError, Result as RpcResult};
use tower_lsp_server::ls_types::*;
use tower_lsp_server::{Client, LanguageServer};

use crate::check::{Check, Fix, check};
use crate::complete;
use crate::files::{FileRule, Settings};
use crate::hover;
use crate::model::Model;
use crate::navigate;
use crate::text::{LineIndex, apply_change};

/// One open document.
#[derive(Debug)]
struct Doc {
    text: Arc<String>,
    version: i32,
    /// Bumped by every change; a check or parse is current only for its generation.
    generation: u64,
    path: Option<PathBuf>,
    description: bool,
    /// Diagnostics were published and not cleared since.
    published: bool,
    /// The latest parse, for requests.
    parsed: Option<Arc<Parsed>>,
    /// Quick fixes of the latest published check, with the generation they belong to.
    fixes: (u64, Vec<Fix>),
    /// Held while the document is checked: one check at a time.
    check_lock: Arc<tokio::sync::Mutex<()>>,
}

/// A parse of one generation of a document.
#[derive(Debug)]
pub(crate) struct Parsed {
    generation: u64,
    pub(crate) text: Arc<String>,
    pub(crate) index: LineIndex,
    pub(crate) model: Model,
    pub(crate) path: Option<PathBuf>,
}

impl Parsed {
    /// Parses `text` (generation `generation` of the document at `path`).
    pub(crate) fn new(
        text: impl Into<Arc<String>>,
        generation: u64,
        path: Option<PathBuf>,
    ) -> Parsed {
        let text = text.into();
        let (raw, _) = hv_config::parse_document(&text);
        let model = Model::new(raw.unwrap_or_default(), &text);
        Parsed {
            generation,
            index: LineIndex::new(&text),
            text,
            model,
            path,
        }
    }
}

#[derive(Debug, Default)]
struct State {
    docs: HashMap<Uri, Doc>,
    settings: Settings,
    roots: Vec<PathBuf>,
    rule: Option<FileRule>,
    /// The client can watch files for us (dynamic `didChangeWatchedFiles` registration).
    can_watch: bool,
}

impl State {
    fn rule(&mut self) -> &FileRule {
        let (settings, roots) = (&self.settings, &self.roots);
        self.rule.get_or_insert_with(|| {
            let (rule, errors) = FileRule::new(&settings.system_files, roots.clone());
            for e in errors {
                tracing::warn!("{e}");
            }
            rule
        })
    }
}

/// The `hv lsp` backend.
#[derive(Debug)]
pub struct Backend {
    client: Client,
    state: Arc<Mutex<State>>,
}

impl Backend {
    /// A backend talking to `client`.
    pub fn new(client: Client) -> Self {
        Self {
            client,
            state: Arc::default(),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Checks `uri` after `delay`, unless it changed meanwhile, and publishes the diagnostics.
    fn schedule_check(&self, uri: Uri, delay: Duration) {
        let state = self.state.clone();
        let client = self.client.clone();
        let Some(generation) = lock(&state).docs.get(&uri).map(|d| d.generation) else {
            return;
        };
        tokio::spawn(async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            let check_lock = {
                let state = lock(&state);
                match state.docs.get(&uri).filter(|d| d.generation == generation) {
                    Some(doc) => doc.check_lock.clone(),
                    None => return,
                }
            };
            let _one_at_a_time = check_lock.lock().await;
            let (text, version, path, description, published, check_images) = {
                let state = lock(&state);
                let Some(doc) = state.docs.get(&uri).filter(|d| d.generation == generation) else {
                    return;
                };
                (
                    doc.text.clone(),
                    doc.version,
                    doc.path.clone(),
                    doc.description,
                    doc.published,
                    state.settings.check_images,
                )
            };
            if !description {
                if published {
                    if let Some(doc) = lock(&state).docs.get_mut(&uri) {
                        doc.published = false;
                    }
                    client
                        .publish_diagnostics(uri, Vec::new(), Some(version))
                        .await;
                }
                return;
            }
            let check_uri = uri.clone();
            let checked = tokio::task::spawn_blocking(move || {
                let file = path
                    .clone()
                    .unwrap_or_else(|| PathBuf::from("untitled.toml"));
                let result = check(&text, &file, &check_uri, check_images);
                (result, text, path)
            })
            .await;
            let Ok((
                Check {
                    diagnostics,
                    fixes,
                    model,
                },
                text,
                path,
            )) = checked
            else {
                tracing::error!("checking {} failed", uri.as_str());
                return;
            };
            {
                let mut state = lock(&state);
                let Some(doc) = state
                    .docs
                    .get_mut(&uri)
                    .filter(|d| d.generation == generation)
                else {
                    return;
                };
                doc.published = true;
                doc.fixes = (generation, fixes);
                let index = LineIndex::new(&text);
                doc.parsed = Some(Arc::new(Parsed {
                    generation,
                    text,
                    index,
                    model,
                    path,
                }));
            }
            client
                .publish_diagnostics(uri, diagnostics, Some(version))
                .await;
        });
    }

    /// The current parse of `uri`, if it is an open system description.
    async fn parsed(&self, uri: &Uri) -> Option<Arc<Parsed>> {
        let (text, generation, path) = {
            let state = self.state();
            let doc = state.docs.get(uri).filter(|d| d.description)?;
            if let Some(parsed) = doc
                .parsed
                .as_ref()
                .filter(|p| p.generation == doc.generation)
            {
                return Some(parsed.clone());
            }
            (doc.text.clone(), doc.generation, doc.path.clone())
        };
        let parsed =
            tokio::task::spawn_blocking(move || Arc::new(Parsed::new(text, generation, path)))
                .await
                .ok()?;
        if let Some(doc) = self
            .state()
            .docs
            .get_mut(uri)
            .filter(|d| d.generation == generation)
        {
            doc.parsed = Some(parsed.clone());
        }
        Some(parsed)
    }

    /// The parse of `uri` and the byte offset of `position` in it.
    async fn at(&self, uri: &Uri, position: Position) -> Option<(Arc<Parsed>, usize)> {
        let parsed = self.parsed(uri).await?;
        let offset = parsed.index.offset(&parsed.text, position);
        Some((parsed, offset))
    }

    fn debounce(&self) -> Duration {
        Duration::from_millis(self.state().settings.debounce_ms)
    }

    /// Re-checks every open description now (guest images changed on disk).
    fn recheck_descriptions(&self) {
        let uris: Vec<Uri> = {
            let mut state = self.state();
            state
                .docs
                .iter_mut()
                .filter(|(_, d)| d.description)
                .map(|(uri, d)| {
                    d.generation += 1;
                    uri.clone()
                })
                .collect()
        };
        for uri in uris {
            self.schedule_check(uri, Duration::ZERO);
        }
    }

    /// Re-decides which open documents are descriptions (the settings changed) and re-checks all.
    fn reclassify(&self) {
        let uris: Vec<Uri> = {
            let mut state = self.state();
            state.rule = None;
            state.rule();
            let State { docs, rule, .. } = &mut *state;
            let rule = rule.as_ref().expect("built above");
            for doc in docs.values_mut() {
                doc.description = rule.is_description(doc.path.as_deref(), &doc.text);
                doc.generation += 1;
            }
            docs.keys().cloned().collect()
        };
        for uri in uris {
            self.schedule_check(uri, Duration::ZERO);
        }
    }
}

/// Runs a request's work; a panic (a bug) becomes no answer instead of a dead server.
fn guarded<T>(request: &str, work: impl FnOnce() -> Option<T>) -> Option<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)).unwrap_or_else(|_| {
        tracing::error!("{request} failed (a bug in hv lsp); answered with nothing");
        None
    })
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The file path of a `file:` URI.
fn file_path(uri: &Uri) -> Option<PathBuf> {
    (uri.scheme().as_str() == "file")
        .then(|| uri.to_file_path().map(|p| p.into_owned()))
        .flatten()
}

fn location(uri: &Uri, parsed: &Parsed, span: &std::ops::Range<usize>) -> Location {
    Location::new(uri.clone(), parsed.index.range(&parsed.text, span))
}

impl LanguageServer for Backend {
    async fn initialize(&self, params: InitializeParams) -> RpcResult<InitializeResult> {
        {
            let mut state = self.state();
            let mut roots: Vec<PathBuf> = params
                .workspace_folders
                .iter()
                .flatten()
                .filter_map(|f| file_path(&f.uri))
                .collect();
            #[allow(deprecated)] // older clients send only `rootUri`
            if let Some(root) = params.root_uri.as_ref().and_then(file_path) {
                roots.push(root);
            }
            state.roots = roots;
            if let Some(options) = &params.initialization_options {
                state.settings = state.settings.updated(options);
            }
            state.rule = None;
            state.can_watch = params
                .capabilities
                .workspace
                .as_ref()
                .and_then(|w| w.did_change_watched_files.as_ref())
                .and_then(|d| d.dynamic_registration)
                == Some(true);
        }
        Ok(InitializeResult {
            server_info: Some(ServerInfo {
                name: "hv lsp".to_owned(),
                version: Some(env!("CARGO_PKG_VERSION").to_owned()),
            }),
            capabilities: ServerCapabilities {
                text_document_sync: Some(TextDocumentSyncCapability::Options(
                    TextDocumentSyncOptions {
                        open_close: Some(true),
                        change: Some(TextDocumentSyncKind::INCREMENTAL),
                        save: Some(TextDocumentSyncSaveOptions::Supported(true)),
                        ..TextDocumentSyncOptions::default()
                    },
                )),
                completion_provider: Some(CompletionOptions {
                    trigger_characters: Some(
                        ["\"", "[", "/", "=", ".", "{", ","]
                            .map(str::to_owned)
                            .to_vec(),
                    ),
                    ..CompletionOptions::default()
                }),
                hover_provider: Some(HoverProviderCapability::Simple(true)),
                definition_provider: Some(OneOf::Left(true)),
                references_provider: Some(OneOf::Left(true)),
                rename_provider: Some(OneOf::Right(RenameOptions {
                    prepare_provider: Some(true),
                    work_done_progress_options: WorkDoneProgressOptions::default(),
                })),
                document_symbol_provider: Some(OneOf::Left(true)),
                code_action_provider: Some(CodeActionProviderCapability::Options(
                    CodeActionOptions {
                        code_action_kinds: Some(vec![CodeActionKind::QUICKFIX]),
                        ..CodeActionOptions::default()
                    },
                )),
                ..ServerCapabilities::default()
            },
            ..InitializeResult::default()
        })
    }

    async fn initialized(&self, _: InitializedParams) {
        if !self.state().can_watch {
            return;
        }
        // Guest images are checked too: when a build rewrites one, check again. The request is
        // sent from its own task: with concurrency level 1 a handler must not wait for the client.
        let client = self.client.clone();
        tokio::spawn(async move {
            let options = DidChangeWatchedFilesRegistrationOptions {
                watchers: vec![FileSystemWatcher {
                    glob_pattern: GlobPattern::String("**/*.elf".to_owned()),
                    kind: None,
                }],
            };
            let registration = Registration {
                id: "hv-lsp-guest-images".to_owned(),
                method: "workspace/didChangeWatchedFiles".to_owned(),
                register_options: serde_json::to_value(options).ok(),
            };
            if let Err(e) = client.register_capability(vec![registration]).await {
                tracing::warn!("cannot watch guest images: {e}");
            }
        });
    }

    async fn did_change_watched_files(&self, params: DidChangeWatchedFilesParams) {
        if params
            .changes
            .iter()
            .any(|c| c.uri.as_str().ends_with(".elf"))
        {
            self.recheck_descriptions();
        }
    }

    async fn shutdown(&self) -> RpcResult<()> {
        Ok(())
    }

    async fn did_open(&self, params: DidOpenTextDocumentParams) {
        let doc = params.text_document;
        let uri = doc.uri.clone();
        {
            let mut state = self.state();
            let path = file_path(&doc.uri);
            let description = state.rule().is_description(path.as_deref(), &doc.text);
            let generation = state.docs.get(&uri).map_or(0, |d| d.generation + 1);
            state.docs.insert(
                doc.uri,
                Doc {
                    text: Arc::new(doc.text),
                    version: doc.version,
                    generation,
                    path,
                    description,
                    published: false,
                    parsed: None,
                    fixes: (0, Vec::new()),
                    check_lock: Arc::default(),
                },
            );
        }
        self.schedule_check(uri, Duration::ZERO);
    }

    async fn did_change(&self, params: DidChangeTextDocumentParams) {
        let uri = params.text_document.uri;
        {
            let mut state = self.state();
            let State { docs, rule, .. } = &mut *state;
            let Some(doc) = docs.get_mut(&uri) else {
                return;
            };
            let text = Arc::make_mut(&mut doc.text);
            for change in params.content_changes {
                apply_change(text, change);
            }
            doc.version = params.text_document.version;
            doc.generation += 1;
            if let Some(rule) = rule.as_ref() {
                doc.description = rule.is_description(doc.path.as_deref(), &doc.text);
            }
        }
        let delay = self.debounce();
        self.schedule_check(uri, delay);
    }

    async fn did_save(&self, params: DidSaveTextDocumentParams) {
        let uri = params.text_document.uri;
        if let Some(doc) = self.state().docs.get_mut(&uri) {
            doc.generation += 1;
        }
        self.schedule_check(uri, Duration::ZERO);
    }

    async fn did_close(&self, params: DidCloseTextDocumentParams) {
        let uri = params.text_document.uri;
        let removed = self.state().docs.remove(&uri);
        if removed.is_some_and(|d| d.published) {
            self.client.publish_diagnostics(uri, Vec::new(), None).await;
        }
    }

    async fn did_change_configuration(&self, params: DidChangeConfigurationParams) {
        {
            let mut state = self.state();
            state.settings = state.settings.updated(&params.settings);
        }
        self.reclassify();
    }

    async fn completion(&self, params: CompletionParams) -> RpcResult<Option<CompletionResponse>> {
        let position = params.text_document_position;
        let Some((parsed, offset)) = self
            .at(&position.text_document.uri, position.position)
            .await
        else {
            return Ok(None);
        };
        let roots = self.state().roots.clone();
        let items = guarded("completion", || {
            Some(complete::complete(&parsed, offset, &roots))
        })
        .unwrap_or_default();
        Ok((!items.is_empty()).then_some(CompletionResponse::Array(items)))
    }

    async fn hover(&self, params: HoverParams) -> RpcResult<Option<Hover>> {
        let position = params.text_document_position_params;
        let Some((parsed, offset)) = self
            .at(&position.text_document.uri, position.position)
            .await
        else {
            return Ok(None);
        };
        let found = guarded("hover", || hover::hover(&parsed, offset));
        Ok(found.map(|(markdown, span)| Hover {
            contents: HoverContents::Markup(MarkupContent {
                kind: MarkupKind::Markdown,
                value: markdown,
            }),
            range: Some(parsed.index.range(&parsed.text, &span)),
        }))
    }

    async fn goto_definition(
        &self,
        params: GotoDefinitionParams,
    ) -> RpcResult<Option<GotoDefinitionResponse>> {
        let position = params.text_document_position_params;
        let uri = position.text_document.uri;
        let Some((parsed, offset)) = self.at(&uri, position.position).await else {
            return Ok(None);
        };
        let spans = guarded("definition", || {
            Some(navigate::definitions(&parsed.model, offset))
        });
        let locations: Vec<Location> = spans
            .unwrap_or_default()
            .iter()
            .map(|span| location(&uri, &parsed, span))
            .collect();
        Ok((!locations.is_empty()).then_some(GotoDefinitionResponse::Array(locations)))
    }

    async fn references(&self, params: ReferenceParams) -> RpcResult<Option<Vec<Location>>> {
        let position = params.text_document_position;
        let uri = position.text_document.uri;
        let Some((parsed, offset)) = self.at(&uri, position.position).await else {
            return Ok(None);
        };
        let include = params.context.include_declaration;
        let spans = guarded("references", || {
            Some(navigate::references(&parsed.model, offset, include))
        });
        let locations: Vec<Location> = spans
            .unwrap_or_default()
            .iter()
            .map(|span| location(&uri, &parsed, span))
            .collect();
        Ok((!locations.is_empty()).then_some(locations))
    }

    async fn prepare_rename(
        &self,
        params: TextDocumentPositionParams,
    ) -> RpcResult<Option<PrepareRenameResponse>> {
        let Some((parsed, offset)) = self.at(&params.text_document.uri, params.position).await
        else {
            return Ok(None);
        };
        Ok(guarded("prepareRename", || {
            let target = navigate::rename_target(&parsed.model, offset).ok()?;
            Some(PrepareRenameResponse::RangeWithPlaceholder {
                range: parsed.index.range(&parsed.text, &target.span),
                placeholder: target.name.clone(),
            })
        }))
    }

    async fn rename(&self, params: RenameParams) -> RpcResult<Option<WorkspaceEdit>> {
        let position = params.text_document_position;
        let uri = position.text_document.uri;
        let Some((parsed, offset)) = self.at(&uri, position.position).await else {
            return Ok(None);
        };
        let Some(spans) = guarded("rename", || {
            Some(navigate::rename(&parsed.model, offset, &params.new_name))
        }) else {
            return Ok(None);
        };
        let spans = spans.map_err(|e| RpcError::invalid_params(e.to_string()))?;
        let edits = spans
            .iter()
            .map(|span| {
                TextEdit::new(
                    parsed.index.range(&parsed.text, span),
                    params.new_name.clone(),
                )
            })
            .collect();
        Ok(Some(WorkspaceEdit {
            changes: Some(HashMap::from([(uri, edits)])),
            ..WorkspaceEdit::default()
        }))
    }

    async fn document_symbol(
        &self,
        params: DocumentSymbolParams,
    ) -> RpcResult<Option<DocumentSymbolResponse>> {
        let Some(parsed) = self.parsed(&params.text_document.uri).await else {
            return Ok(None);
        };
        let symbols = guarded("documentSymbol", || {
            Some(navigate::symbols(
                &parsed.model,
                &parsed.text,
                &parsed.index,
            ))
        });
        Ok(symbols.map(DocumentSymbolResponse::Nested))
    }

    async fn code_action(&self, params: CodeActionParams) -> RpcResult<Option<CodeActionResponse>> {
        let uri = params.text_document.uri;
        let wanted = params.range;
        let actions: Vec<CodeActionOrCommand> = {
            let state = self.state();
            let Some(doc) = state.docs.get(&uri) else {
                return Ok(None);
            };
            let (generation, fixes) = &doc.fixes;
            if *generation != doc.generation {
                return Ok(None);
            }
            fixes
                .iter()
                .filter(|f| f.range.start <= wanted.end && wanted.start <= f.range.end)
                .map(|f| {
                    CodeActionOrCommand::CodeAction(CodeAction {
                        title: f.title.clone(),
                        kind: Some(CodeActionKind::QUICKFIX),
                        diagnostics: Some(vec![f.diagnostic.clone()]),
                        edit: Some(WorkspaceEdit {
                            changes: Some(HashMap::from([(
                                uri.clone(),
                                vec![TextEdit::new(f.range, f.new_text.clone())],
                            )])),
                            ..WorkspaceEdit::default()
                        }),
                        is_preferred: Some(true),
                        ..CodeAction::default()
                    })
                })
                .collect()
        };
        Ok((!actions.is_empty()).then_some(actions))
    }
}
