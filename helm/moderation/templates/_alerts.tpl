{{/* The alerting rules (Prometheus rule-file groups). The PrometheusRule renders them with
     this release's thresholds; helm/alerts.yml is the same rules with the default values,
     as a plain rules file (scripts/render-alerts.py writes it, tests keep it current). */}}
{{- define "moderation.alertGroups" -}}
{{- $a := .Values.alerts -}}
groups:
  - name: moderation
    rules:
      - alert: ModerationLagGrowing
        expr: |-
          sum by (topic) (moderation_consumer_lag) > {{ $a.lagMinimum }}
          and sum by (topic) (moderation_consumer_lag) > sum by (topic) (moderation_consumer_lag offset 10m)
        for: 10m
        labels: {severity: warning}
        annotations:
          summary: "Upload lag on {{ "{{" }} $labels.topic {{ "}}" }} has grown for 10 minutes"
          description: Workers decide uploads more slowly than they arrive. Check Triton latency and errors, worker readiness, and scale workers (up to the topic's partitions) or Triton replicas.
      - alert: ModerationNoDecisions
        expr: |-
          sum(rate(moderation_messages_total[5m])) == 0
          and sum(moderation_consumer_lag) > 0
        for: 5m
        labels: {severity: critical}
        annotations:
          summary: No upload settled for 5 minutes while the input topic has lag
          description: Nothing is decided or dead-lettered although the input topic has lag. Check /readyz of the workers (broker, Triton, policies) and their logs.
      - alert: ModerationDeadLetterRate
        expr: |-
          sum by (error_type) (rate(moderation_dead_letters_total[10m]))
          / ignoring (error_type) group_left sum(rate(moderation_messages_total[10m]))
          > {{ $a.deadLetterRatio }}
        for: 10m
        labels: {severity: warning}
        annotations:
          summary: "Over {{ mulf $a.deadLetterRatio 100 }}% of uploads dead-lettered as {{ "{{" }} $labels.error_type {{ "}}" }}"
          description: More uploads than usual are undecidable for one reason. The dead-letter topic holds each original with its error-type and error-message headers.
      - alert: ModerationTritonErrors
        expr: |-
          sum by (kind) (rate(moderation_triton_errors_total{kind!="rejected"}[5m])) > {{ $a.tritonErrorsPerSecond }}
        for: 5m
        labels: {severity: warning}
        annotations:
          summary: "Triton calls failing ({{ "{{" }} $labels.kind {{ "}}" }})"
          description: Workers retry with backoff and commit nothing meanwhile. Check the Triton pods, their logs and the model stubs.
      - alert: ModerationWorkersNotReady
        expr: |-
          moderation_ready == 0
        for: 5m
        labels: {severity: warning}
        annotations:
          summary: "Worker {{ "{{" }} $labels.instance {{ "}}" }} not ready for 5 minutes"
          description: Its /readyz fails on the broker, Triton or the policy set; the response body names which.
      - alert: ModerationPolicyReloadErrors
        expr: |-
          increase(moderation_policy_reloads_total{result="error"}[15m]) > 0
        labels: {severity: warning}
        annotations:
          summary: "Worker {{ "{{" }} $labels.instance {{ "}}" }} refused a policy set"
          description: A policy set embedded by another model than the one Triton serves was applied; workers keep the last good set. Re-apply the policies with the current model.
      - alert: ModerationInternalErrors
        expr: |-
          increase(moderation_internal_errors_total[10m]) > 0
        labels: {severity: warning}
        annotations:
          summary: "Uploads dead-lettered as internal_error in {{ "{{" }} $labels.stage {{ "}}" }}"
          description: An exception nobody expected (a bug) met an upload; the worker logged it with a traceback and the upload's coordinates.
      - alert: ModerationEndToEndSLO
        expr: |-
          histogram_quantile(0.99, sum by (le) (rate(moderation_end_to_end_seconds_bucket[5m])))
          > {{ $a.endToEndP99Seconds }}
        for: 10m
        labels: {severity: warning}
        annotations:
          summary: "p99 from upload to decision above the SLO of {{ $a.endToEndP99Seconds }} s"
          description: Uploads wait too long for a decision. Check lag, time per stage and Triton's queue time on the dashboard.
{{- end -}}
