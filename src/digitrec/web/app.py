"""The web app: a page to draw or upload digits, and a JSON API for programs, over one shared Recognizer.

    >>> from digitrec.web.app import create_app
    >>> app = create_app()                       # the bundled model; create_app(digitrec.load("runs/x"))
    >>> uvicorn.run(app, host="127.0.0.1", port=8000)    # what `digitrec serve` does

Routes: GET / (the page), POST /api/read, POST /api/classify, POST /api/explain, GET /api/health,
GET /api/model, GET and POST /api/samples (storing only with `learn`: `digitrec serve --learn`), and the
OpenAPI description at /openapi.json (browsable at /docs, with Swagger UI served from the package).
Reading is CPU work, so it runs in worker threads, at most `workers` at a time; requests wait for a
turn on the event loop, holding no thread, and the Recognizer is read-only and shared by all of them.
Large JSON bodies are parsed in worker threads too, so /api/health answers at once whatever the load.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import errno
import io
import os
import resource
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import h11
import numpy as np
import uvicorn
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from PIL import Image
from pydantic import BaseModel, Field, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers, UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from digitrec import __version__
from digitrec.errors import UsageError
from digitrec.explain import occlusion
from digitrec.images import ImageError, NotAnImage, TooLarge, load_image
from digitrec.learn import Sample, Store, parse_text, samples_from_reading
from digitrec.recognize import TOP_K, Recognizer, draw_reading, load

MAX_UPLOAD_BYTES = 10_000_000  # largest picture accepted, in bytes
MAX_PIXELS = 40_000_000  # largest picture accepted, in pixels: a 48-megapixel photo decodes to 144 MB
MAX_CLASSIFY = 256  # most 28x28 digits in one /api/classify request
ENVELOPE = 64 * 1024  # room in a request body for multipart headers or the JSON around the picture
ANNOTATED_MAX_SIDE = 1600  # annotated pictures come back no larger than this
ANNOTATED_PNG_PIXELS = 1_000_000  # smaller annotated pictures come back as PNG, larger ones as JPEG
DECODE_BUDGET = 400_000_000  # bytes one picture may take while decoded: a 40-megapixel RGBA picture, or a 25-megapixel animated WebP
REQUEST_TIMEOUT = 60.0  # seconds a request has to arrive whole (headers and body) after the connection opens or the last answer
MAX_CONNECTIONS = 1000  # open connections at most; more are closed at once, before they cost a file descriptor for long
IDLE_TIMEOUT = 5  # seconds a kept-alive connection may wait for its next request
M_MMAP_THRESHOLD, MMAP_THRESHOLD = -3, 1 << 20  # glibc's mallopt: blocks over 1 MB are mapped, and unmapped when freed
JSON_ON_LOOP = 64 * 1024  # JSON bodies larger than this are parsed in a worker thread, not on the event loop
STATIC = Path(__file__).parent / "static"

# The page and its files come from this server only; nothing is fetched from anywhere else.
PAGE_POLICY = ("default-src 'self'; img-src 'self' data: blob:; object-src 'none'; base-uri 'none'; "
               "form-action 'none'; frame-ancestors 'none'")
# The API docs: Swagger UI from this server too; the requests it tries out go to this server only.
DOCS_POLICY = ("default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
               "form-action 'none'; frame-ancestors 'none'")
SAFE_HEADERS = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "Cache-Control": "no-cache"}


# ---------------------------------------------------------------------------------------------------
# Request and response bodies


class DigitOut(BaseModel):
    label: int = Field(ge=0, le=9, description="the digit read")
    confidence: float = Field(description="the model's probability for it")
    box: tuple[int, int, int, int] = Field(description="x, y, width, height in the picture's pixels")
    top: list[tuple[int, float]] = Field(description="the likeliest digits with their probabilities, best first")
    input: list[list[int]] | None = Field(None, description="with ?inputs=true: the 28x28 digit the model saw, "
                                                            "rows of 0-255, white ink on black")


class ReadingOut(BaseModel):
    """One line of `digitrec predict --json`, plus notes and the annotated picture when asked for."""

    file: str | None = Field(None, description="the uploaded file's name, when it has one")
    text: str = Field(description='digits in reading order; lines joined by "\\n"; "" when there are none')
    digits: list[DigitOut]
    notes: list[str] | None = Field(None, description="things worth knowing, e.g. only one frame of a GIF read")
    annotated: str | None = Field(None, description="with ?annotate=true: the picture with boxes and labels, "
                                                    "as a data: URL (PNG or JPEG, at most 1600 pixels a side)")


class ImageIn(BaseModel):
    image: str = Field(description="the picture file's bytes in base64, or a data: URL", examples=["iVBORw0KGgo..."])
    file: str | None = Field(None, max_length=255, description="a name to echo back in the reading")


# fail_fast: a body of 200,000 bad values gets its first error, not 200,000 of them (hundreds of MB).
Row = Annotated[list[Annotated[int, Field(ge=0, le=255)]], Field(min_length=28, max_length=28, fail_fast=True)]
Digit28 = Annotated[list[Row], Field(min_length=28, max_length=28, fail_fast=True)]


class ClassifyIn(BaseModel):
    images: list[Digit28] = Field(min_length=1, max_length=MAX_CLASSIFY, fail_fast=True,
                                  description=f"1 to {MAX_CLASSIFY} digits, each 28 rows of 28 integers 0-255, "
                                              "white ink on black like MNIST")


class ClassifyOut(BaseModel):
    labels: list[int] = Field(description="the likeliest digit of each image")
    probabilities: list[list[float]] = Field(description="ten probabilities per image, for digits 0-9")


class ExplainIn(BaseModel):
    image: Digit28 = Field(description="one digit, 28 rows of 28 integers 0-255, white ink on black (a reading's `input`)")


class ExplainOut(BaseModel):
    saliency: list[list[float]] = Field(description="28x28 values in [0, 1]: how much erasing the ink there "
                                                    "lowers the log-probability of the digit read (occlusion)")
    top: list[tuple[int, float]] = Field(description="the three likeliest digits with their probabilities")


class SampleIn(BaseModel):
    """A picture and its right digits (`image` + `text`), or one 28x28 digit and its label (`digit` + `label`)."""

    image: str | None = Field(None, description="a picture file in base64 or a data: URL, with `text`")
    text: str | None = Field(None, max_length=1000, description="the picture's right digits in reading order")
    digit: Digit28 | None = Field(None, description="one 28x28 digit as the model saw it (a reading's `input`)")
    label: int | None = Field(None, ge=0, le=9, description="the digit's right label, with `digit`")
    predicted: int | None = Field(None, ge=0, le=9, description="what the model read, if known")


class SamplesOut(BaseModel):
    learning: bool = Field(description="whether this server stores samples (digitrec serve --learn)")
    total: int = Field(description="samples stored")
    counts: dict[str, int] = Field(description="samples per digit")
    stored: list[int] | None = Field(None, description="after a POST: the ids of the samples just stored")


class Limits(BaseModel):
    max_upload_bytes: int
    max_pixels: int
    max_classify: int


class ModelOut(BaseModel):
    name: str = Field(description="the architecture, e.g. `accurate`")
    model: str | None = Field(None, description='which model reads: "bundled", "personal, 40 samples", or a folder')
    learning: bool = Field(False, description="whether corrections sent to /api/samples are stored")
    test_accuracy: float | None = Field(description="accuracy on the MNIST test set, when the checkpoint records it")
    version: str = Field(description="the digitrec package's version")
    low_confidence: float = Field(description="digits read with a lower confidence are worth a second look")
    limits: Limits


class Health(BaseModel):
    status: str = "ok"


# ---------------------------------------------------------------------------------------------------
# The work behind the routes


@dataclass
class Service:
    """What the routes share: the model, the limits, and the turns for readings running at once."""

    recognizer: Recognizer
    max_upload_bytes: int
    max_pixels: int
    workers: int
    decode_budget: int = DECODE_BUDGET
    store: Store | None = None  # where corrections go; None: this server does not learn
    _turns: asyncio.Semaphore | None = None

    @property
    def turns(self) -> asyncio.Semaphore:
        """At most `workers` readings at once; the others wait on the event loop, not in a thread."""
        if self._turns is None:
            self._turns = asyncio.Semaphore(self.workers)
        return self._turns

    def _read(self, data: bytes, top_k: int = TOP_K):
        """Picture bytes -> (picture, reading), within the limits; raises HTTPException."""
        try:
            picture = load_image(data, max_pixels=self.max_pixels, decode_budget=self.decode_budget)
            return picture, self.recognizer.read(picture, top_k=top_k)
        except NotAnImage as e:
            raise HTTPException(415, f"cannot read the picture: {e}") from None
        except TooLarge as e:
            raise HTTPException(413, f"the picture is too large: {e}") from None
        except ImageError as e:
            raise HTTPException(422, f"cannot read the picture: {e}") from None
        except MemoryError:
            raise HTTPException(503, "not enough memory to read this picture now; try again or send a smaller one") from None

    def read(self, data: bytes, file: str | None, top_k: int, annotate: bool, inputs: bool = False) -> dict:
        """Picture bytes -> the ReadingOut object. Runs in a worker thread; raises HTTPException."""
        picture, reading = self._read(data, top_k)
        out = reading.to_dict(file=file)
        if inputs:
            for d, digit in zip(out["digits"], reading.digits):
                d["input"] = digit.image.tolist()
        if reading.notes:
            out["notes"] = list(reading.notes)
        if annotate:
            out["annotated"] = data_url(draw_reading(picture, reading))
        return out

    def classify(self, images: np.ndarray) -> dict:
        probs = self.recognizer.classify(images)  # (N, 10)
        return {"labels": probs.argmax(1).tolist(), "probabilities": np.round(probs.astype(np.float64), 6).tolist()}


    def explain(self, image: np.ndarray) -> dict:
        probs = self.recognizer.classify(image[None])[0]
        saliency = occlusion(self.recognizer.logits, image[None])[0]
        order = np.argsort(-probs)[:TOP_K]
        return {"saliency": np.round(saliency.astype(np.float64), 3).tolist(),
                "top": [(int(k), round(float(probs[k]), 4)) for k in order]}

    def samples(self, stored: list[int] | None = None) -> dict:
        counts = self.store.counts() if self.store is not None else {}
        return {"learning": self.store is not None, "total": sum(counts.values()),
                "counts": {str(k): v for k, v in counts.items()}, "stored": stored}

    def add_samples(self, body: "SampleIn") -> dict:
        """Store a correction; raises HTTPException. Runs in a worker thread."""
        if self.store is None:
            raise HTTPException(403, "this server does not store samples; start it with: digitrec serve --learn")
        try:
            if body.digit is not None and body.label is not None and body.image is None:
                samples = [Sample(body.label, np.array(body.digit, np.uint8), "web", predicted=body.predicted)]
            elif body.image is not None and body.text is not None and body.digit is None:
                data = decode_base64(body.image)
                if len(data) > self.max_upload_bytes:
                    raise HTTPException(413, f"the picture is larger than the {self.max_upload_bytes / 1e6:g} MB limit")
                picture, reading = self._read(data)
                samples = samples_from_reading(picture, reading, parse_text(body.text), "web")
            else:
                raise HTTPException(422, 'send {"digit": 28x28, "label": 0-9} or {"image": "<base64>", "text": "3141"}')
            return self.samples(self.store.add(samples))
        except UsageError as e:
            raise HTTPException(422, str(e).removeprefix("web: ").removeprefix("--text: ")) from None


def data_url(rgb: np.ndarray) -> str:
    """An RGB uint8 picture as a data: URL, shrunk to ANNOTATED_MAX_SIDE; PNG when small, else JPEG."""
    img = Image.fromarray(rgb)
    img.thumbnail((ANNOTATED_MAX_SIDE, ANNOTATED_MAX_SIDE), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    if img.width * img.height <= ANNOTATED_PNG_PIXELS:
        img.save(buf, "PNG")
        mime = "image/png"
    else:
        img.save(buf, "JPEG", quality=88)
        mime = "image/jpeg"
    return f"data:{mime};base64,{base64.b64encode(buf.getvalue()).decode('ascii')}"


def service(request: Request) -> Service:
    return request.app.state.service


class BodyLimit:
    """Answer 413 to request bodies over the limit without reading them whole.

    A declared Content-Length over the limit is refused before a byte is read; a body sent without
    one (chunked) is cut off as soon as what has arrived passes the limit.
    """

    def __init__(self, app: ASGIApp, max_upload_bytes: int):
        self.app = app
        self.max_upload_bytes = max_upload_bytes

    def limit(self, content_type: str) -> int:
        if content_type.startswith("multipart/"):
            return self.max_upload_bytes + ENVELOPE
        return 4 * -(-self.max_upload_bytes // 3) + ENVELOPE  # the picture in base64, in JSON

    def message(self) -> str:
        return f"the upload is larger than the {self.max_upload_bytes / 1e6:g} MB limit"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = Headers(scope=scope)
        limit = self.limit(headers.get("content-type", "").lower())
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            response = JSONResponse({"detail": self.message()}, status_code=413, headers={"Connection": "close"})
            return await response(scope, receive, send)
        received = 0

        async def limited_receive():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > limit:
                raise HTTPException(413, self.message(), headers={"Connection": "close"})
            return message

        await self.app(scope, limited_receive, send)


# ---------------------------------------------------------------------------------------------------
# The app


READ_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {"schema": {
            "type": "object", "required": ["file"],
            "properties": {"file": {"type": "string", "format": "binary",
                                    "description": "a PNG, JPEG, BMP, TIFF, WebP or GIF picture"}}}},
        "application/json": {"schema": ImageIn.model_json_schema()},
    },
}
CLASSIFY_BODY = {"required": True, "content": {"application/json": {"schema": ClassifyIn.model_json_schema()}}}
ERRORS = {
    413: {"description": "the upload is over the byte limit, or the picture over the pixel limit"},
    415: {"description": "not a picture in a known format, or a body that is neither multipart nor JSON"},
    422: {"description": "a damaged picture, bad JSON, or values out of range"},
}


def create_app(recognizer: Recognizer | None = None, max_upload_bytes: int = MAX_UPLOAD_BYTES,
               max_pixels: int = MAX_PIXELS, workers: int | None = None, learn: Store | None = None) -> FastAPI:
    """The FastAPI app over one Recognizer (None: load the default model now, once).

    `learn`, a sample Store, makes POST /api/samples store the corrections sent to it; without one
    the server learns nothing from its users.

    `workers` caps the readings running at once (default: one per processor core); more requests
    wait their turn rather than crowding the cores and memory.

    >>> client = fastapi.testclient.TestClient(create_app(digitrec.load("runs/fast")))
    >>> client.post("/api/read", files={"file": open("photo.jpg", "rb")}).json()["text"]
    '3141'
    """
    if max_upload_bytes < 1 or max_pixels < 1:
        raise ValueError("the upload and pixel limits must be positive")
    app = FastAPI(
        title="digitrec", version=__version__, docs_url=None, redoc_url=None,
        description="Read handwritten digits in pictures, or classify 28x28 MNIST-style digits. "
                    "The page at / draws and uploads through this same API.")
    app.state.service = Service(recognizer or load(), max_upload_bytes, max_pixels, workers or os.cpu_count() or 1,
                                store=learn)
    app.add_middleware(BodyLimit, max_upload_bytes=max_upload_bytes)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(ClientDisconnect, client_gone)

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Content-Security-Policy": PAGE_POLICY, **SAFE_HEADERS})

    @app.get("/docs", include_in_schema=False)
    def docs() -> FileResponse:
        return FileResponse(STATIC / "swagger" / "docs.html", headers={"Content-Security-Policy": DOCS_POLICY,
                                                                        **SAFE_HEADERS})

    @app.post("/api/read", response_model=ReadingOut, response_model_exclude_none=True,
              openapi_extra={"requestBody": READ_BODY}, responses=ERRORS, summary="Read the digits in a picture")
    async def read(request: Request, svc: Annotated[Service, Depends(service)],
                   top_k: Annotated[int, Query(ge=1, le=10, description="alternatives listed per digit")] = TOP_K,
                   annotate: Annotated[bool, Query(description="also return the picture with boxes and labels")] = False,
                   inputs: Annotated[bool, Query(description="also return each digit's 28x28 input")] = False):
        """Send the picture as a multipart upload in the form field `file`, or as JSON
        `{"image": "<base64>"}`. The answer is the object `digitrec predict --json` prints for a file."""
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind == "multipart/form-data":
            async with request.form(max_files=1, max_fields=10) as form:
                upload = form.get("file")
                if not isinstance(upload, UploadFile):
                    raise HTTPException(422, "send the picture in the form field 'file'")
                data, file = await upload.read(svc.max_upload_bytes + 1), upload.filename
        elif kind == "application/json" or kind.endswith("+json"):
            body = await parse_json_body(ImageIn, await request.body())
            data = await run_in_threadpool(decode_base64, body.image)
            file = body.file
        else:
            raise HTTPException(415, "send multipart/form-data with the picture in the field 'file', "
                                     'or application/json {"image": "<base64>"}')
        if len(data) > svc.max_upload_bytes:
            raise HTTPException(413, f"the picture is larger than the {svc.max_upload_bytes / 1e6:g} MB limit")
        async with svc.turns:
            return await run_in_threadpool(svc.read, data, file, top_k, annotate, inputs)

    @app.post("/api/classify", response_model=ClassifyOut, summary="Classify 28x28 MNIST-style digits",
              openapi_extra={"requestBody": CLASSIFY_BODY},
              responses={413: ERRORS[413], 422: {"description": "bad JSON, or not 1 to 256 digits of 28x28 values 0-255"}})
    async def classify(request: Request, svc: Annotated[Service, Depends(service)]):
        """Probabilities of digits 0-9 for each of up to 256 ready-made 28x28 digits (white on black)."""
        body = await parse_json_body(ClassifyIn, await request.body())
        async with svc.turns:
            return await run_in_threadpool(lambda: svc.classify(np.array(body.images, np.uint8)))

    @app.post("/api/explain", response_model=ExplainOut, summary="Which strokes of a 28x28 digit decided its reading")
    async def explain(body: ExplainIn, svc: Annotated[Service, Depends(service)]):
        """A saliency map by occlusion (works with every model runtime) and the top-3 probabilities."""
        async with svc.turns:
            return await run_in_threadpool(svc.explain, np.array(body.image, np.uint8))

    @app.get("/api/samples", response_model=SamplesOut, response_model_exclude_none=True,
             summary="How many corrected digits are stored")
    def samples(svc: Annotated[Service, Depends(service)]):
        return svc.samples()

    @app.post("/api/samples", response_model=SamplesOut, response_model_exclude_none=True,
              responses={403: {"description": "the server was started without --learn"}, **ERRORS},
              summary="Store a corrected (or confirmed) reading, to learn from")
    async def add_samples(body: SampleIn, svc: Annotated[Service, Depends(service)]):
        """`{"digit": <28x28>, "label": 7}` stores one digit; `{"image": "<base64>", "text": "3141"}` reads the
        picture and stores its digits with those labels (refused when the count differs). `digitrec learn fit`
        then learns them."""
        async with svc.turns:
            return await run_in_threadpool(svc.add_samples, body)

    @app.get("/api/health", response_model=Health, summary="Is the server up")
    async def health():  # on the event loop: answered at once, however busy the worker threads are
        return Health()

    @app.get("/api/model", response_model=ModelOut, summary="The model in use and the server's limits")
    def model(svc: Annotated[Service, Depends(service)]):
        meta = svc.recognizer.meta
        return ModelOut(name=meta.get("architecture", "unknown"), model=svc.recognizer.name,
                        learning=svc.store is not None,
                        test_accuracy=meta.get("metrics", {}).get("test_accuracy"), version=__version__,
                        low_confidence=svc.recognizer.low_confidence,
                        limits=Limits(max_upload_bytes=svc.max_upload_bytes, max_pixels=svc.max_pixels,
                                      max_classify=MAX_CLASSIFY))

    return app


def parse_json(model: type[BaseModel], body: bytes) -> BaseModel:
    """Validate a JSON body the way FastAPI does for declared bodies: problems become a 422."""
    try:
        return model.model_validate_json(body)
    except ValidationError as e:
        raise RequestValidationError([{**err, "loc": ("body", *err["loc"])}
                                      for err in e.errors(include_url=False)]) from None


async def parse_json_body(model: type[BaseModel], body: bytes) -> BaseModel:
    """parse_json, in a worker thread when the body is large: a 13 MB body takes the CPU for seconds."""
    if len(body) <= JSON_ON_LOOP:
        return parse_json(model, body)
    return await run_in_threadpool(parse_json, model, body)


async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """422 with where and what is wrong, never the input itself: it may be megabytes, or not text."""
    detail = [{"type": err.get("type"), "loc": list(err.get("loc", ())), "msg": str(err.get("msg", ""))}
              for err in exc.errors()[:20]]
    return JSONResponse({"detail": detail}, status_code=422)


async def client_gone(request: Request, exc: ClientDisconnect) -> Response:
    return Response(status_code=400)  # nobody is left to read it; this only keeps the log quiet


def decode_base64(text: str) -> bytes:
    """The picture's bytes from base64 or a data: URL; line breaks and spaces (as `base64 FILE` prints) are fine."""
    if text.startswith("data:"):
        text = text.partition(",")[2]
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise HTTPException(422, "image: not valid base64") from None


class GuardedH11(H11Protocol):
    """uvicorn's HTTP/1.1 connection with the two limits it lacks: a cap on open connections, and a
    deadline for each request to arrive whole, so slow, silent or short-bodied clients are let go."""

    request_timeout = REQUEST_TIMEOUT
    max_connections = MAX_CONNECTIONS

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self.deadline = None
        if len(self.connections) > self.max_connections:
            transport.abort()  # refused now rather than left to run the process out of file descriptors
            return
        self._arm()

    def _arm(self) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
        self.deadline = self.loop.call_later(self.request_timeout, self._expire)

    def _expire(self) -> None:
        # Still waiting for a request, or for the rest of its body: the client had its time.
        if self.conn.their_state in (h11.IDLE, h11.SEND_BODY) and not self.transport.is_closing():
            self.transport.close()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()

    def connection_lost(self, exc) -> None:
        if getattr(self, "deadline", None) is not None:
            self.deadline.cancel()
        super().connection_lost(exc)


def return_freed_memory() -> None:
    """Have glibc give large freed blocks back to the system, so memory falls again after a burst.

    By default glibc raises its threshold for mapping big blocks each time one is freed, after which
    a picture's buffers come from heaps that are never given back; a fixed threshold stops that.
    """
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
    except (OSError, AttributeError):
        pass  # not glibc: its allocator keeps its own ways


def server_config(app: FastAPI, request_timeout: float = REQUEST_TIMEOUT,
                  max_connections: int = MAX_CONNECTIONS, log_level: str = "warning") -> uvicorn.Config:
    """uvicorn's settings for `digitrec serve`: HTTP/1.1 with deadlines, a bound on connections, and
    enough file descriptors for them (the soft limit is raised to the hard one where that is needed).

    >>> uvicorn.Server(server_config(create_app())).run(sockets=[listen("127.0.0.1", 8000)])
    """
    protocol = type("Guarded", (GuardedH11,), {"request_timeout": request_timeout, "max_connections": max_connections})
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = max_connections + 256  # room for the model, the log and the listening socket besides
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted if hard == resource.RLIM_INFINITY else min(wanted, hard), hard))
        except (ValueError, OSError):
            pass  # the connection cap still applies; the system's limit may be met first
    return_freed_memory()
    return uvicorn.Config(app, http=protocol, log_level=log_level, timeout_keep_alive=IDLE_TIMEOUT,
                          h11_max_incomplete_event_size=ENVELOPE)


def listen(host: str, port: int) -> socket.socket:
    """A socket listening on host:port (0: any free port), or a UsageError that says why it cannot be.

    >>> sock = listen("127.0.0.1", 0); sock.getsockname()
    ('127.0.0.1', 40537)
    """
    if not 0 <= port <= 65535:
        raise UsageError(f"--port {port}: ports go from 1 to 65535 (0 picks a free one)")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as e:
        raise UsageError(f"--host {host}: not an address to listen on ({e.strerror})") from None
    sock = socket.socket(family, kind, proto)
    try:
        # Like other servers: a port still draining old connections can be taken at once.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            raise UsageError(f"port {port} on {host} is already in use; choose another with --port") from None
        if e.errno == errno.EACCES:
            raise UsageError(f"no permission to listen on port {port} on {host}; choose a port above 1023") from None
        raise UsageError(f"cannot listen on {host} port {port} ({e.strerror or e})") from None
    return sock
