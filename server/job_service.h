// drfm.v1.JobService: thin RPC methods over the JobManager.
#ifndef DRFM_SERVER_JOB_SERVICE_H_
#define DRFM_SERVER_JOB_SERVICE_H_

#include "drfm/v1/jobs.grpc.pb.h"
#include "server/job_manager.h"

namespace drfm::server {

// Thread-safe (the JobManager is).
class JobServiceImpl final : public v1::JobService::Service {
 public:
  explicit JobServiceImpl(JobManager* jobs);

  grpc::Status SubmitFit(grpc::ServerContext* context, const v1::SubmitFitRequest* request,
                         v1::Job* response) override;
  grpc::Status EstimateFit(grpc::ServerContext* context, const v1::SubmitFitRequest* request,
                           v1::FitEstimate* response) override;
  grpc::Status SubmitMlpFit(grpc::ServerContext* context, const v1::SubmitMlpFitRequest* request,
                            v1::Job* response) override;
  grpc::Status SubmitAnalysis(grpc::ServerContext* context,
                              const v1::SubmitAnalysisRequest* request, v1::Job* response) override;
  grpc::Status GetJob(grpc::ServerContext* context, const v1::GetJobRequest* request,
                      v1::Job* response) override;
  grpc::Status ListJobs(grpc::ServerContext* context, const v1::ListJobsRequest* request,
                        v1::ListJobsResponse* response) override;
  grpc::Status CancelJob(grpc::ServerContext* context, const v1::CancelJobRequest* request,
                         v1::Job* response) override;
  grpc::Status DeleteJob(grpc::ServerContext* context, const v1::DeleteJobRequest* request,
                         v1::DeleteJobResponse* response) override;
  // Streams the job's events after request.after_sequence, then live ones, and ends after the
  // terminal state change; ends early when the client cancels or the server shuts down.
  grpc::Status WatchJob(grpc::ServerContext* context, const v1::WatchJobRequest* request,
                        grpc::ServerWriter<v1::JobEvent>* writer) override;

 private:
  JobManager* jobs_;
};

}  // namespace drfm::server

#endif  // DRFM_SERVER_JOB_SERVICE_H_
