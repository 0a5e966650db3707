//! `/v1/documents`, `/v1/tags`: upload, list, read, patch, delete, stream the original.

use axum::Json;
use axum::body::Body;
use axum::extract::{FromRequest, Multipart, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use strata_engine::model::{Document, DocumentFilter, DocumentPatch, DocumentStatus};
use strata_engine::{DocumentId, IngestOutcome, ListDocuments, UploadMeta};

use crate::error::{ApiError, Code};
use crate::extract::{ApiJson, ApiPath, ApiQuery, Preconditions, Tenant};
use crate::{AppState, cached};

/// Fields a client may select with `fields=`.
const DOCUMENT_FIELDS: &[&str] = &[
    "id",
    "title",
    "filename",
    "media_type",
    "byte_size",
    "sha256",
    "tags",
    "metadata",
    "status",
    "error",
    "chunk_count",
    "job_id",
    "created_at",
    "updated_at",
];

/// Most bytes of one non-file multipart field.
const MAX_FIELD_BYTES: usize = 64 * 1024;

/// JSON upload body: a text document.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TextUpload {
    /// The document's text.
    text: String,
    /// Its title (default: the first words of the text).
    #[schema(min_length = 1, max_length = 512)]
    title: Option<String>,
    /// Tags: at most 64 distinct, each 1-64 characters without commas; trimmed, deduplicated.
    #[serde(default)]
    tags: Vec<String>,
    /// A JSON object stored with the document (at most 64 KiB as JSON).
    #[schema(value_type = Option<Object>)]
    metadata: Option<Value>,
    /// `text/plain` (default), `text/markdown` or `text/html`.
    #[schema(value_type = Option<TextMediaType>)]
    media_type: Option<String>,
}

/// The media types of JSON uploads.
#[derive(utoipa::ToSchema)]
pub enum TextMediaType {
    /// Plain text.
    #[schema(rename = "text/plain")]
    Plain,
    /// Markdown.
    #[schema(rename = "text/markdown")]
    Markdown,
    /// HTML.
    #[schema(rename = "text/html")]
    Html,
}

/// Multipart upload body: a file and its description.
#[derive(utoipa::ToSchema)]
#[expect(
    dead_code,
    reason = "describes the multipart form for the OpenAPI document"
)]
pub struct FileUpload {
    /// The file: PDF, HTML, Markdown or plain text (by its part's content type, else its name).
    #[schema(value_type = String, content_media_type = "application/octet-stream")]
    file: Vec<u8>,
    /// Its title (default: the file name).
    title: Option<String>,
    /// Comma-separated tags.
    tags: Option<String>,
    /// A JSON object, as text.
    metadata: Option<String>,
}

/// Where to follow an ingestion job.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct JobLinks {
    /// The job's id.
    id: strata_engine::JobId,
    /// `GET` this for its state.
    url: String,
    /// `GET` this for its progress as Server-Sent Events.
    events_url: String,
}

/// What an upload answers.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct UploadResponse {
    /// The document (new, or the existing one with the same content).
    document: Document,
    /// The job that processes it; null for a duplicate.
    job: Option<JobLinks>,
    /// Whether the tenant already had a document with this content.
    duplicate: bool,
}

/// `POST /v1/documents`: multipart (`file`, `title`, `tags`, `metadata`) or JSON text.
#[utoipa::path(
    post,
    path = "/v1/documents",
    operation_id = "upload_document",
    tag = "documents",
    summary = "Upload a document",
    description = "Stores the document and queues its ingestion (extract, chunk, embed, index); \
                   follow the returned job. Content the tenant already has is not stored twice: \
                   the existing document is returned with `duplicate: true` and status 200.",
    request_body(content(
        (FileUpload = "multipart/form-data"),
        (TextUpload = "application/json"),
    )),
    responses(
        (status = 202, description = "Stored; ingestion queued", body = UploadResponse,
         headers(("location" = String, description = "The document's URL"))),
        (status = 200, description = "The tenant already has this content", body = UploadResponse,
         headers(("location" = String, description = "The document's URL"))),
        (status = 400, description = "`malformed_json` or `malformed_multipart`"),
        (status = 413, description = "`payload_too_large`"),
        (status = 415, description = "`unsupported_media_type`: neither multipart nor JSON, or a file strata cannot extract"),
        (status = 422, description = "`validation_failed`"),
    ),
)]
pub async fn upload(
    State(app): State<AppState>,
    tenant: Tenant,
    req: Request,
) -> Result<Response, ApiError> {
    let ctype = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let outcome = if ctype.starts_with("multipart/form-data") {
        let mp = Multipart::from_request(req, &app)
            .await
            .map_err(|e| ApiError::new(Code::MalformedMultipart, e.body_text()))?;
        upload_multipart(&app, &tenant, mp).await?
    } else if ctype.starts_with("application/json") {
        let ApiJson(body) = ApiJson::<TextUpload>::from_request(req, &app).await?;
        let declared = body.media_type.unwrap_or_else(|| "text/plain".to_owned());
        if declared.to_ascii_lowercase().starts_with("application/pdf") {
            return Err(ApiError::invalid(
                "media_type",
                "JSON uploads carry text; send PDFs as multipart files",
            ));
        }
        let meta = UploadMeta {
            title: body.title,
            filename: None,
            declared_type: Some(declared),
            tags: body.tags,
            metadata: body.metadata,
        };
        app.engine
            .documents()
            .ingest_text(&tenant.0, &body.text, meta)
            .await?
    } else {
        return Err(ApiError::new(
            Code::UnsupportedMediaType,
            "send multipart/form-data with a `file` field, or application/json with `text`",
        ));
    };
    Ok(match outcome {
        IngestOutcome::Created(doc) => created_response(StatusCode::ACCEPTED, &doc, false),
        IngestOutcome::Duplicate(doc) => created_response(StatusCode::OK, &doc, true),
    })
}

fn created_response(status: StatusCode, doc: &Document, duplicate: bool) -> Response {
    let job = doc.job_id.filter(|_| !duplicate).map(|j| JobLinks {
        id: j,
        url: format!("/v1/jobs/{j}"),
        events_url: format!("/v1/jobs/{j}/events"),
    });
    let body = UploadResponse {
        document: doc.clone(),
        job,
        duplicate,
    };
    let mut resp = (status, Json(body)).into_response();
    if let Ok(loc) = HeaderValue::from_str(&format!("/v1/documents/{}", doc.id)) {
        resp.headers_mut().insert(header::LOCATION, loc);
    }
    resp
}

async fn upload_multipart(
    app: &AppState,
    tenant: &Tenant,
    mut mp: Multipart,
) -> Result<IngestOutcome, ApiError> {
    let mut meta = UploadMeta::default();
    let mut staged = None;
    let result: Result<(), ApiError> = async {
        while let Some(mut field) = mp.next_field().await? {
            let name = field.name().unwrap_or("").to_owned();
            match name.as_str() {
                "file" => {
                    if staged.is_some() {
                        return Err(ApiError::invalid(
                            "file",
                            "send exactly one file per upload",
                        ));
                    }
                    meta.filename = field.file_name().map(str::to_owned);
                    meta.declared_type = field.content_type().map(str::to_owned);
                    let mut w = app.engine.documents().begin_upload().await?;
                    loop {
                        match field.chunk().await {
                            Ok(Some(bytes)) => {
                                if let Err(e) = w.write(&bytes).await {
                                    w.abort().await;
                                    return Err(e.into());
                                }
                            }
                            Ok(None) => break,
                            Err(e) => {
                                w.abort().await;
                                return Err(e.into());
                            }
                        }
                    }
                    staged = Some(w.finish().await?);
                }
                "title" | "tags" | "metadata" => {
                    let text = small_field(&name, &mut field).await?;
                    match name.as_str() {
                        "title" => meta.title = Some(text),
                        "tags" => meta.tags.extend(
                            text.split(',')
                                .map(str::trim)
                                .filter(|t| !t.is_empty())
                                .map(str::to_owned),
                        ),
                        _ => meta.metadata = Some(strata_engine::validate::metadata_str(&text)?),
                    }
                }
                other => {
                    return Err(ApiError::invalid(
                        other.to_owned(),
                        "unknown field (expected file, title, tags, metadata)",
                    ));
                }
            }
        }
        Ok(())
    }
    .await;
    if let Err(e) = result {
        if let Some(s) = staged {
            s.discard().await;
        }
        return Err(e);
    }
    let staged = staged.ok_or_else(|| ApiError::invalid("file", "is required"))?;
    Ok(app
        .engine
        .documents()
        .ingest(&tenant.0, staged, meta)
        .await?)
}

async fn small_field(
    name: &str,
    field: &mut axum::extract::multipart::Field<'_>,
) -> Result<String, ApiError> {
    let mut buf = Vec::new();
    while let Some(chunk) = field.chunk().await? {
        buf.extend_from_slice(&chunk);
        if buf.len() > MAX_FIELD_BYTES {
            return Err(ApiError::invalid(
                name,
                format!("must be at most {MAX_FIELD_BYTES} bytes"),
            ));
        }
    }
    String::from_utf8(buf).map_err(|_| ApiError::invalid(name, "must be UTF-8 text"))
}

/// Query of `GET /v1/documents`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Page size (default 50, at most 500).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
    /// Only documents carrying this tag.
    tag: Option<String>,
    /// Only documents in this state.
    #[param(value_type = Option<DocumentStatus>)]
    status: Option<String>,
    /// Comma-separated fields to return (`id` always is); all when absent.
    fields: Option<String>,
}

/// A page of documents.
#[derive(utoipa::ToSchema)]
#[expect(
    dead_code,
    reason = "describes the cached JSON body for the OpenAPI document"
)]
pub struct DocumentPage {
    /// Newest first, with the selected fields.
    #[schema(value_type = Vec<crate::openapi::DocumentSelection>)]
    items: Vec<Value>,
    /// Pass as `cursor` for the next page; null on the last page.
    next_cursor: Option<String>,
}

/// `GET /v1/documents` (cached per tenant; any write of the tenant's invalidates it).
#[utoipa::path(
    get,
    path = "/v1/documents",
    operation_id = "list_documents",
    tag = "documents",
    summary = "List documents",
    description = "Newest first, by cursor; filter by tag and status, select fields.",
    params(ListQuery, crate::openapi::IfNoneMatch),
    responses(
        (status = 200, description = "A page", body = DocumentPage, headers(("etag" = String))),
        (status = 304, description = "Unchanged since the given ETag"),
        (status = 400, description = "`validation_failed`: an unknown query parameter"),
        (status = 422, description = "`validation_failed`: a bad limit, cursor, status or field"),
    ),
)]
pub async fn list(
    State(app): State<AppState>,
    tenant: Tenant,
    inm: Preconditions,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Response, ApiError> {
    let fields = parse_fields(q.fields.as_deref())?;
    let status = q.status.as_deref().map(DocumentStatus::parse).transpose()?;
    let cursor = q.cursor.filter(|c| !c.is_empty());
    let tag = q.tag.filter(|t| !t.is_empty());
    let query = ListDocuments {
        limit: q.limit,
        cursor,
        filter: DocumentFilter { tag, status },
    };
    let read = app
        .engine
        .cache_policy()
        .document_list(&tenant.0, &query, fields.as_deref());
    cached::json(&app, &inm, read, || async {
        let page = app
            .engine
            .documents()
            .list_documents(&tenant.0, query)
            .await?;
        let items: Vec<Value> = page
            .items
            .iter()
            .map(|d| select(d, fields.as_deref()))
            .collect();
        cached::body(&json!({ "items": items, "next_cursor": page.next_cursor }))
    })
    .await
}

/// Query of single-document reads.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct GetQuery {
    /// Comma-separated fields to return (`id` always is); all when absent.
    fields: Option<String>,
}

/// `GET /v1/documents/{id}` (cached per tenant).
#[utoipa::path(
    get,
    path = "/v1/documents/{id}",
    operation_id = "get_document",
    tag = "documents",
    summary = "Read a document",
    params(crate::openapi::DocumentPath, GetQuery, crate::openapi::IfNoneMatch),
    responses(
        (status = 200, description = "The document", body = crate::openapi::DocumentSelection, headers(("etag" = String))),
        (status = 304, description = "Unchanged since the given ETag"),
        (status = 400, description = "`validation_failed`: an unknown query parameter"),
        (status = 404, description = "`not_found`"),
        (status = 422, description = "`validation_failed`: an unknown field"),
    ),
)]
pub async fn get(
    State(app): State<AppState>,
    tenant: Tenant,
    inm: Preconditions,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<GetQuery>,
) -> Result<Response, ApiError> {
    let fields = parse_fields(q.fields.as_deref())?;
    let id = DocumentId::parse_or_not_found(&id)?;
    let read = app
        .engine
        .cache_policy()
        .document(&tenant.0, id, fields.as_deref());
    cached::json(&app, &inm, read, || async {
        let doc = app.engine.documents().get_document(&tenant.0, id).await?;
        cached::body(&select(&doc, fields.as_deref()))
    })
    .await
}

/// `PATCH /v1/documents/{id}`: `title`, `tags` (replaces), `metadata` (replaces).
#[utoipa::path(
    patch,
    path = "/v1/documents/{id}",
    operation_id = "update_document",
    tag = "documents",
    summary = "Update a document's title, tags or metadata",
    params(crate::openapi::DocumentPath),
    request_body = DocumentPatch,
    responses(
        (status = 200, description = "The updated document", body = Document),
        (status = 400, description = "`malformed_json`"),
        (status = 404, description = "`not_found`"),
        (status = 413, description = "`payload_too_large`"),
        (status = 415, description = "`unsupported_media_type`: not JSON"),
        (status = 422, description = "`validation_failed`"),
    ),
)]
pub async fn patch(
    State(app): State<AppState>,
    tenant: Tenant,
    ApiPath(id): ApiPath<String>,
    ApiJson(patch): ApiJson<DocumentPatch>,
) -> Result<Json<Document>, ApiError> {
    let id = DocumentId::parse_or_not_found(&id)?;
    let doc = app
        .engine
        .documents()
        .update_document(&tenant.0, id, patch)
        .await?;
    // Titles appear in search hits: the tenant's frequent searches are recomputed.
    app.warmer.touch(&tenant.0);
    Ok(Json(doc))
}

/// `DELETE /v1/documents/{id}`
#[utoipa::path(
    delete,
    path = "/v1/documents/{id}",
    operation_id = "delete_document",
    tag = "documents",
    summary = "Delete a document, its chunks, vectors and original",
    params(crate::openapi::DocumentPath),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "`not_found`"),
    ),
)]
pub async fn delete(
    State(app): State<AppState>,
    tenant: Tenant,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let id = DocumentId::parse_or_not_found(&id)?;
    app.engine
        .documents()
        .delete_document(&tenant.0, id)
        .await?;
    app.warmer.touch(&tenant.0);
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v1/documents/{id}/file`: the original, streamed.
#[utoipa::path(
    get,
    path = "/v1/documents/{id}/file",
    operation_id = "download_document",
    tag = "documents",
    summary = "Download the original file",
    params(crate::openapi::DocumentPath, crate::openapi::IfNoneMatch),
    responses(
        (status = 200, description = "The original, with its media type", content(
            ("application/pdf"), ("text/plain"), ("text/markdown"), ("text/html")),
         headers(("etag" = String, description = "The content's sha256"))),
        (status = 304, description = "Unchanged since the given ETag"),
        (status = 404, description = "`not_found`"),
    ),
)]
pub async fn file(
    State(app): State<AppState>,
    tenant: Tenant,
    ApiPath(id): ApiPath<String>,
    inm: Preconditions,
) -> Result<Response, ApiError> {
    let id = DocumentId::parse_or_not_found(&id)?;
    let doc = app.engine.documents().get_document(&tenant.0, id).await?;
    let etag = format!("\"{}\"", doc.sha256);
    if inm.matches(&etag) {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response());
    }
    let (doc, file) = app.engine.documents().open_file(&tenant.0, id).await?;
    let ctype = match doc.media_type.as_str() {
        m if m.starts_with("text/") => format!("{m}; charset=utf-8"),
        m => m.to_owned(),
    };
    let name = doc.filename.clone().unwrap_or_else(|| doc.title.clone());
    let disposition = format!(
        "attachment; filename=\"{}\"; filename*=UTF-8''{}",
        name.chars()
            .map(
                |c| if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                    c
                } else {
                    '_'
                }
            )
            .collect::<String>(),
        percent_encode(&name)
    );
    let mut resp = Response::new(Body::from_stream(file));
    let h = resp.headers_mut();
    let hv =
        |s: &str| HeaderValue::from_str(s).map_err(|_| ApiError::new(Code::Internal, "bad header"));
    h.insert(header::CONTENT_TYPE, hv(&ctype)?);
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(doc.byte_size));
    h.insert(header::CONTENT_DISPOSITION, hv(&disposition)?);
    h.insert(header::ETAG, hv(&etag)?);
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=0, must-revalidate"),
    );
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    Ok(resp)
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Query of `GET /v1/documents/{id}/chunks`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ChunkQuery {
    /// First ordinal to return (default 0).
    #[param(minimum = 0, maximum = 4_294_967_295_u64, value_type = Option<u64>)]
    from: Option<u32>,
    /// Page size (default 50, at most 500).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u32>,
}

/// A page of a document's chunks.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ChunkPage {
    /// In order.
    items: Vec<strata_engine::model::Chunk>,
    /// Pass as `from` for the next page; null on the last page.
    next_from: Option<u32>,
}

/// The tenant's tags.
#[derive(utoipa::ToSchema)]
#[expect(
    dead_code,
    reason = "describes the cached JSON body for the OpenAPI document"
)]
pub struct TagList {
    /// Most used first.
    items: Vec<strata_engine::model::TagCount>,
}

/// `GET /v1/documents/{id}/chunks`: the document's chunks in order, from ordinal `from`.
#[utoipa::path(
    get,
    path = "/v1/documents/{id}/chunks",
    operation_id = "list_document_chunks",
    tag = "documents",
    summary = "Read a document's chunks",
    params(crate::openapi::DocumentPath, ChunkQuery),
    responses(
        (status = 200, description = "A page of chunks", body = ChunkPage),
        (status = 400, description = "`validation_failed`: an unknown or malformed query parameter"),
        (status = 404, description = "`not_found`"),
        (status = 422, description = "`validation_failed`: a bad limit"),
    ),
)]
pub async fn chunks(
    State(app): State<AppState>,
    tenant: Tenant,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<ChunkQuery>,
) -> Result<Json<ChunkPage>, ApiError> {
    let id = DocumentId::parse_or_not_found(&id)?;
    let from = q.from.unwrap_or(0);
    let items = app
        .engine
        .documents()
        .list_chunks(&tenant.0, id, from, q.limit)
        .await?;
    let limit = q.limit.unwrap_or(strata_engine::DEFAULT_PAGE) as usize;
    let next_from = (items.len() == limit)
        .then(|| items.last().map(|c| c.ordinal + 1))
        .flatten();
    Ok(Json(ChunkPage { items, next_from }))
}

/// `GET /v1/tags`: tags with document counts, most used first (cached per tenant).
#[utoipa::path(
    get,
    path = "/v1/tags",
    operation_id = "list_tags",
    tag = "documents",
    summary = "List the tenant's tags with document counts",
    params(crate::openapi::IfNoneMatch),
    responses(
        (status = 200, description = "Tags, most used first", body = TagList, headers(("etag" = String))),
        (status = 304, description = "Unchanged since the given ETag"),
    ),
)]
pub async fn tags(
    State(app): State<AppState>,
    tenant: Tenant,
    inm: Preconditions,
) -> Result<Response, ApiError> {
    let read = app.engine.cache_policy().tags(&tenant.0);
    cached::json(&app, &inm, read, || async {
        let items = app.engine.documents().tag_counts(&tenant.0).await?;
        cached::body(&json!({ "items": items }))
    })
    .await
}

fn parse_fields(raw: Option<&str>) -> Result<Option<Vec<String>>, ApiError> {
    let Some(raw) = raw.filter(|r| !r.trim().is_empty()) else {
        return Ok(None);
    };
    let mut out = vec!["id".to_owned()];
    for f in raw.split(',').map(str::trim).filter(|f| !f.is_empty()) {
        if !DOCUMENT_FIELDS.contains(&f) {
            return Err(ApiError::invalid(
                "fields",
                format!(
                    "unknown field {f:?}; choose from {}",
                    DOCUMENT_FIELDS.join(", ")
                ),
            ));
        }
        if !out.iter().any(|o| o == f) {
            out.push(f.to_owned());
        }
    }
    Ok(Some(out))
}

fn select(doc: &Document, fields: Option<&[String]>) -> Value {
    let full = serde_json::to_value(doc).unwrap_or(Value::Null);
    match (fields, full) {
        (Some(fields), Value::Object(map)) => {
            let kept: Map<String, Value> = map
                .into_iter()
                .filter(|(k, _)| fields.iter().any(|f| f == k))
                .collect();
            Value::Object(kept)
        }
        (_, v) => v,
    }
}
