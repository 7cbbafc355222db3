//! gRPC end to end, as Istio users run it: a tonic server registered with a `grpc` port
//! behind its sidecar, a tonic client behind another, mTLS between them, the control plane
//! pushing both — unary and server-streaming calls, the app's own status codes, a denial
//! by an AuthorizationPolicy read by the client as PERMISSION_DENIED, and
//! `grpc_response_status` in the metrics.

mod common;

use common::*;
use std::path::Path;
use std::pin::Pin;
use tonic::codec::ProstCodec;
use tonic::codegen::{http, BoxFuture, Context, Poll, Service};
use weft_control_plane::istio::load_str;
use weft_testkit::Etcd;

#[derive(Clone, PartialEq, prost::Message)]
struct Ask {
    #[prost(string, tag = "1")]
    text: String,
    #[prost(uint32, tag = "2")]
    count: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Answer {
    #[prost(string, tag = "1")]
    text: String,
    #[prost(uint32, tag = "2")]
    index: u32,
}

// tonic's own item type: its `Status` is large, as tonic's generated code has it too.
#[allow(clippy::result_large_err)]
type Replies = Pin<Box<dyn tokio_stream::Stream<Item = Result<Answer, tonic::Status>> + Send>>;

struct Say;

impl tonic::server::UnaryService<Ask> for Say {
    type Response = Answer;
    type Future = BoxFuture<tonic::Response<Answer>, tonic::Status>;
    fn call(&mut self, request: tonic::Request<Ask>) -> Self::Future {
        let ask = request.into_inner();
        Box::pin(async move {
            match ask.text.as_str() {
                "missing" => Err(tonic::Status::not_found("no such thing")),
                text => Ok(tonic::Response::new(Answer { text: format!("you said {text}"), index: 0 })),
            }
        })
    }
}

struct Count;

impl tonic::server::ServerStreamingService<Ask> for Count {
    type Response = Answer;
    type ResponseStream = Replies;
    type Future = BoxFuture<tonic::Response<Replies>, tonic::Status>;
    fn call(&mut self, request: tonic::Request<Ask>) -> Self::Future {
        let ask = request.into_inner();
        #[allow(clippy::result_large_err)] // tonic's `Status`
        let reply = move |i| Ok(Answer { text: ask.text.clone(), index: i });
        Box::pin(async move {
            let replies = (0..ask.count).map(reply);
            Ok(tonic::Response::new(Box::pin(tokio_stream::iter(replies)) as Replies))
        })
    }
}

/// The `echo.Echo` service, routed by path as tonic's generated servers are.
#[derive(Clone)]
struct Echo;

impl tonic::server::NamedService for Echo {
    const NAME: &'static str = "echo.Echo";
}

impl<B> Service<http::Request<B>> for Echo
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<tonic::codegen::StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::BoxBody>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(ProstCodec::<Answer, Ask>::default());
            Ok(match req.uri().path() {
                "/echo.Echo/Say" | "/echo.Echo/Forbidden" => grpc.unary(Say, req).await,
                "/echo.Echo/Count" => grpc.server_streaming(Count, req).await,
                _ => tonic::Status::unimplemented("no such method").into_http(),
            })
        })
    }
}

/// A tonic client whose calls go to the caller's sidecar, naming the service `echo`.
async fn client(outbound: std::net::SocketAddr) -> tonic::client::Grpc<tonic::transport::Channel> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{outbound}"))
        .unwrap()
        .origin("http://echo".parse().unwrap())
        .connect()
        .await
        .unwrap();
    tonic::client::Grpc::new(channel)
}

async fn unary(
    grpc: &mut tonic::client::Grpc<tonic::transport::Channel>,
    path: &'static str,
    text: &str,
) -> Result<Answer, tonic::Status> {
    grpc.ready().await.unwrap();
    let ask = Ask { text: text.into(), count: 0 };
    let path = http::uri::PathAndQuery::from_static(path);
    grpc.unary(tonic::Request::new(ask), path, ProstCodec::<Ask, Answer>::default()).await.map(|r| r.into_inner())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_unary_streaming_errors_and_denials_through_two_sidecars_over_mtls() {
    let etcd = Etcd::start();
    let store = admin_store(&[etcd.url()], &etcd).await;
    let (c, _cp) = Cp::start(&etcd, "cp-a", test_ca()).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(Echo)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let w = workload("echo-v1", &[("app", "echo"), ("version", "v1")]);
    let (echo, _g1) = sidecar_speaking(&c, w, Some("echo"), Some(app), weft_model::AppProtocol::Grpc).await;
    let (caller, _g2) = sidecar(&c, workload("api-gateway", &[("app", "api-gateway")]), None, None).await;
    eventually("the caller knows echo, both hold certificates", || async {
        endpoints(&caller, "echo") == 1
            && [&echo, &caller].iter().all(|r| r.shared.identity.as_ref().unwrap().current().is_some())
    })
    .await;

    let mut grpc = client(caller.outbound).await;
    let said = unary(&mut grpc, "/echo.Echo/Say", "hello").await.unwrap();
    assert_eq!(said.text, "you said hello");
    // Server streaming: every message, in order, then the status.
    grpc.ready().await.unwrap();
    let ask = Ask { text: "tick".into(), count: 25 };
    let path = http::uri::PathAndQuery::from_static("/echo.Echo/Count");
    let mut stream = grpc
        .server_streaming(tonic::Request::new(ask), path, ProstCodec::<Ask, Answer>::default())
        .await
        .unwrap()
        .into_inner();
    let mut seen = Vec::new();
    while let Some(answer) = stream.message().await.unwrap() {
        seen.push(answer.index);
    }
    assert_eq!(seen, (0..25).collect::<Vec<_>>());
    // The app's own status reaches the client as the app said it.
    let missing = unary(&mut grpc, "/echo.Echo/Say", "missing").await.unwrap_err();
    assert_eq!((missing.code(), missing.message()), (tonic::Code::NotFound, "no such thing"));

    // A DENY at the server's sidecar: the client reads PERMISSION_DENIED, not a protocol error.
    let deny = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: no-forbidden, namespace: production}\nspec:\n  selector: {matchLabels: {app: echo}}\n  action: DENY\n  rules:\n  - to:\n    - operation: {paths: [/echo.Echo/Forbidden]}\n";
    store.apply(&load_str(Path::new("deny.yaml"), deny).unwrap()).await.unwrap();
    eventually("the DENY reaches the echo sidecar", || async {
        !echo.shared.snapshot().config.inbound.authz.is_empty()
    })
    .await;
    let denied = unary(&mut grpc, "/echo.Echo/Forbidden", "x").await.unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied, "{denied:?}");
    assert_eq!(unary(&mut grpc, "/echo.Echo/Say", "still").await.unwrap().text, "you said still");

    // The caller's sidecar counts gRPC by its status.
    eventually("istio_requests_total by grpc_response_status", || async {
        let metrics = metrics(&caller).await;
        let count = |status: &str| {
            metric(
                &metrics,
                "istio_requests_total",
                &["request_protocol=\"grpc\"", &format!("grpc_response_status=\"{status}\"")],
            )
        };
        count("0") >= 3.0 && count("5") >= 1.0 && count("7") >= 1.0
    })
    .await;
}
