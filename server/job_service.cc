#include "server/job_service.h"

#include "server/grpc_status.h"
#include "server/store.h"

namespace drfm::server {
namespace {

// How often a watcher with no new events checks whether its client is still there.
constexpr absl::Duration kWatchPoll = absl::Milliseconds(200);

// Job ids are made by the server (store.cc: 16 hex digits). Anything that cannot be one (a path,
// a NUL byte, an overlong string) is refused as such before a lookup, and never quoted whole.
absl::Status CheckJobId(const std::string& job_id) {
  if (job_id.empty()) return absl::InvalidArgumentError("job_id is required");
  return ValidateName("job_id", job_id);
}

template <typename T>
grpc::Status Reply(absl::StatusOr<T> result, T* response) {
  if (!result.ok()) return ToGrpcStatus(result.status());
  *response = *std::move(result);
  return grpc::Status::OK;
}

}  // namespace

JobServiceImpl::JobServiceImpl(JobManager* jobs) : jobs_(jobs) {}

grpc::Status JobServiceImpl::SubmitFit(grpc::ServerContext*, const v1::SubmitFitRequest* request,
                                       v1::Job* response) {
  return Reply(jobs_->SubmitFit(*request), response);
}

grpc::Status JobServiceImpl::EstimateFit(grpc::ServerContext*, const v1::SubmitFitRequest* request,
                                         v1::FitEstimate* response) {
  return Reply(jobs_->EstimateFit(*request), response);
}

grpc::Status JobServiceImpl::SubmitMlpFit(grpc::ServerContext*, const v1::SubmitMlpFitRequest* request,
                                          v1::Job* response) {
  return Reply(jobs_->SubmitMlpFit(*request), response);
}

grpc::Status JobServiceImpl::SubmitAnalysis(grpc::ServerContext*, const v1::SubmitAnalysisRequest* request,
                                            v1::Job* response) {
  return Reply(jobs_->SubmitAnalysis(*request), response);
}

grpc::Status JobServiceImpl::GetJob(grpc::ServerContext*, const v1::GetJobRequest* request, v1::Job* response) {
  if (absl::Status valid = CheckJobId(request->job_id()); !valid.ok()) return ToGrpcStatus(valid);
  return Reply(jobs_->GetJob(request->job_id()), response);
}

grpc::Status JobServiceImpl::ListJobs(grpc::ServerContext*, const v1::ListJobsRequest* request,
                                      v1::ListJobsResponse* response) {
  return Reply(jobs_->ListJobs(*request), response);
}

grpc::Status JobServiceImpl::CancelJob(grpc::ServerContext*, const v1::CancelJobRequest* request,
                                       v1::Job* response) {
  if (absl::Status valid = CheckJobId(request->job_id()); !valid.ok()) return ToGrpcStatus(valid);
  return Reply(jobs_->CancelJob(request->job_id()), response);
}

grpc::Status JobServiceImpl::DeleteJob(grpc::ServerContext*, const v1::DeleteJobRequest* request,
                                       v1::DeleteJobResponse*) {
  if (absl::Status valid = CheckJobId(request->job_id()); !valid.ok()) return ToGrpcStatus(valid);
  return ToGrpcStatus(jobs_->DeleteJob(request->job_id()));
}

grpc::Status JobServiceImpl::WatchJob(grpc::ServerContext* context, const v1::WatchJobRequest* request,
                                      grpc::ServerWriter<v1::JobEvent>* writer) {
  if (absl::Status valid = CheckJobId(request->job_id()); !valid.ok()) return ToGrpcStatus(valid);
  absl::StatusOr<std::unique_ptr<JobWatch>> watch = jobs_->Watch(request->job_id(), request->after_sequence());
  if (!watch.ok()) return ToGrpcStatus(watch.status());
  while (!context->IsCancelled()) {
    absl::StatusOr<std::optional<v1::JobEvent>> event = (*watch)->Next(kWatchPoll);
    if (!event.ok()) return ToGrpcStatus(event.status());
    if (!event->has_value()) {
      if ((*watch)->done()) return grpc::Status::OK;
      continue;
    }
    if (!writer->Write(**event)) return grpc::Status(grpc::StatusCode::CANCELLED, "the client went away");
  }
  return grpc::Status(grpc::StatusCode::CANCELLED, "the watch was cancelled");
}

}  // namespace drfm::server
