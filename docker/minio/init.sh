#!/bin/sh
# minio-init (one-shot): the warehouse bucket and a K2 service account limited to it.
set -eu
mc alias set k2 http://minio:9000 "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD"
mc mb --ignore-existing "k2/$S3_BUCKET"
cat > /tmp/k2-warehouse.json <<JSON
{"Version": "2012-10-17", "Statement": [
  {"Effect": "Allow", "Action": ["s3:ListBucket", "s3:GetBucketLocation"], "Resource": ["arn:aws:s3:::$S3_BUCKET"]},
  {"Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"], "Resource": ["arn:aws:s3:::$S3_BUCKET/*"]}
]}
JSON
mc admin policy create k2 k2-warehouse /tmp/k2-warehouse.json
mc admin user add k2 "$S3_ACCESS_KEY_ID" "$S3_SECRET_ACCESS_KEY"
mc admin policy attach k2 k2-warehouse --user "$S3_ACCESS_KEY_ID" 2>/dev/null || true  # already attached
